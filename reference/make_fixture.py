"""make_fixture.py - cross-check fixtures for tests/test_twin.c, one per architecture.

For fixed random parameters, embedding rows, stream state and one minibatch, the twin
computes in float64 (from the float32 values the C engine holds) the predictions, the
loss, every dense parameter gradient and every embedding row gradient, and writes them
with everything the C test needs to set the same state up. Format (little-endian):

  "M3TF", u32 version (2)
  i32 x32: arch, n_scen, n_cat, n_num, emb_dim, n_hidden, hidden[4], tower_hidden,
           experts shared/scenario/task, mieg, upt, item_warm, mieg_hidden, upt_heads,
           upt_ffn, item_cat_from, item_cat_n, item_num_from, item_num_n,
           B, n_keys, n_users, n_params, dots, 0 x3
  f32 x4:  mieg_align, upt_step, upt_step_conv, gate_scale (version 2; 0 in version 1)
  u64 blob size, the blob (m3_blob_save's format, written by twin.blob_save)
  n_keys  x (u64 key, u32 trained-impression count, f32 row[d])
  n_users x (u64 key, u32 bit k = P[u,k] present, f32 P[n_scen][d])
  B       x (i32 scenario, i64 ts_ms, u64 cat[n_cat], f32 num[n_num],
             f32 y_click, y_conv, w_ctr, w_ctcvr)
  expected: f64 loss, f32 p_ctr[B], f32 p_cvr[B], f32 dparams[n_params],
            f32 drow[n_keys][d]

Every arch but lr gets two fixtures: twin_<arch>.bin (model.dots off) and
twin_<arch>_dots.bin (on).

usage: python3 reference/make_fixture.py OUTDIR [arch...]   (default: every arch)
"""
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402

MAGIC = b"M3TF"
VERSION = 2
B = 12
RELU_MARGIN = 1e-3   # every ReLU input at least this far from the kink


def tiny_cfg(arch, dots=0):
    """Small dimensions that still exercise every path: 3 scenarios (one absent from the
    batch), duplicate keys, two hidden layers, two heads, experts of every kind."""
    return twin.Cfg(arch=arch, dots=dots, n_scen=3, n_cat=5, n_num=3, emb_dim=4, hidden=[6, 5],
                    tower_hidden=4, max_batch=B, n_exp_shared=1, n_exp_scen=1, n_exp_task=1,
                    gate_scale=0.5, mieg=1, upt=1, item_warm=3, mieg_hidden=5, mieg_align=0.3,
                    upt_heads=2,
                    upt_ffn=6, item_cat_from=3, item_cat_n=2, item_num_from=1, item_num_n=2)


def random_params(lay, rng):
    flat = np.zeros(lay.n_params, np.float32)
    for n, shp, o in zip(lay.names, lay.shapes, lay.offs):
        k = int(np.prod(shp))
        if n in ("ul1g", "ul2g") or n.startswith("sW"):
            v = 1.0 + 0.2 * rng.standard_normal(k)
        elif n == "mgamma":
            v = np.array([0.7])
        elif len(shp) == 2 and n != "scen":
            v = rng.standard_normal(k) / np.sqrt(shp[1])
        else:
            v = 0.3 * rng.standard_normal(k)
        flat[o:o + k] = v
    return flat


def make(arch_name, seed, dots=0):
    c = tiny_cfg(twin.ARCHS.index(arch_name), dots)
    lay = twin.Layout(c)
    rng = np.random.default_rng(seed)
    d, S, nc, nn_ = c.emb_dim, c.n_scen, c.n_cat, c.n_num
    params = random_params(lay, rng)
    # the batch: scenarios 0 and 1 only (scenario 2's blocks are empty), few values per
    # slot so that rows repeat within the batch
    vals = [5, 6, 3, 3, 4]
    scen = rng.choice([0, 0, 1], B)
    ts = rng.integers(1000, 2000, B)
    catv = np.stack([rng.integers(0, vals[s], B) for s in range(nc)], 1)
    keys_b = np.array([[twin.feat_key(s, int(catv[i, s])) for s in range(nc)] for i in range(B)],
                      np.uint64)
    num = rng.standard_normal((B, nn_)).astype(np.float32)
    y1 = (rng.random(B) < 0.5).astype(np.float32)
    y2 = y1 * (rng.random(B) < 0.5).astype(np.float32)
    w1 = (rng.random(B) < 0.85).astype(np.float32)
    w2 = (rng.random(B) < 0.75).astype(np.float32)
    keys, idx = np.unique(keys_b, return_inverse=True)
    idx = idx.reshape(B, nc)
    rows = (0.5 * rng.standard_normal((len(keys), d))).astype(np.float32)
    # trained-impression counts: items young (< warm) and warm; other rows any count
    counts = rng.integers(0, 2 * c.item_warm, len(keys)).astype(np.uint32)
    # users: value 0 untracked, 1 tracked without any preference, the others with a
    # random subset of scenarios
    users = []
    for u in range(1, vals[0]):
        mask = 0 if u == 1 else int(rng.integers(1, 1 << S))
        P = (0.5 * rng.standard_normal((S, d))).astype(np.float32)
        users.append((twin.feat_key(0, u), mask, P))
    ukey = {k: (m, P) for k, m, P in users}
    pref = np.zeros((B, S, d), np.float32)
    pmask = np.zeros((B, S), bool)
    for i in range(B):
        m, P = ukey.get(int(keys_b[i, 0]), (0, None))
        for k in range(S):
            if m >> k & 1:
                pref[i, k], pmask[i, k] = P[k], True
    young = counts[idx[:, twin.SLOT_ITEM]] < c.item_warm
    if not 0 < young.sum() < B:   # both a young item (generator) and a warm one (alignment)
        return None

    # float64 forward and backward from the float32 values
    flat = torch.tensor(params, dtype=torch.float64, requires_grad=True)
    E = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    P = lay.views(flat)
    relu_min = [np.inf]
    relu = torch.relu

    def relu_watch(x):
        relu_min[0] = min(relu_min[0], float(x.detach().abs().min()))
        return relu(x)
    torch.relu = relu_watch
    try:
        T = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
        rb = E[torch.tensor(idx)]
        zc, zv, egen, _ = twin.forward(lay, P, rb, T(num), torch.tensor(scen),
                                       torch.tensor(young), T(pref), torch.tensor(pmask))
        loss = twin.loss_fn(lay, zc, zv, egen, rb[:, twin.SLOT_ITEM], torch.tensor(young),
                            T(y1), T(y2), T(w1), T(w2))
    finally:
        torch.relu = relu
    if relu_min[0] < RELU_MARGIN:
        return None
    loss.backward()
    pc, pv = torch.sigmoid(zc).detach().numpy(), torch.sigmoid(zv).detach().numpy()

    ints = [c.arch, S, nc, nn_, d, len(c.hidden)] + [c.hidden[l] if l < len(c.hidden) else 0
                                                     for l in range(4)]
    ints += [c.tower_hidden, c.n_exp_shared, c.n_exp_scen, c.n_exp_task, c.mieg, c.upt,
             c.item_warm, c.mieg_hidden, c.upt_heads, c.upt_ffn, c.item_cat_from, c.item_cat_n,
             c.item_num_from, c.item_num_n, B, len(keys), len(users), lay.n_params, c.dots]
    ints += [0] * (32 - len(ints))
    out = MAGIC + struct.pack("<I32i4f", VERSION, *ints, c.mieg_align, c.upt_step,
                              c.upt_step_conv, c.gate_scale)
    blob = twin.blob_save(lay, params)
    out += struct.pack("<Q", len(blob)) + blob
    for k, n, r in zip(keys, counts, rows):
        out += struct.pack("<QI", int(k), int(n)) + r.astype("<f4").tobytes()
    for k, m, Pu in users:
        out += struct.pack("<QI", k, m) + Pu.astype("<f4").tobytes()
    for i in range(B):
        out += struct.pack("<iq", int(scen[i]), int(ts[i])) + keys_b[i].astype("<u8").tobytes()
        out += num[i].astype("<f4").tobytes()
        out += struct.pack("<4f", y1[i], y2[i], w1[i], w2[i])
    out += struct.pack("<d", loss.item())
    out += pc.astype("<f4").tobytes() + pv.astype("<f4").tobytes()
    out += flat.grad.numpy().astype("<f4").tobytes() + E.grad.numpy().astype("<f4").tobytes()
    info = dict(n_params=lay.n_params, keys=len(keys), loss=loss.item(), relu_margin=relu_min[0],
                young=int(young.sum()), bytes=len(out))
    return out, info


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    archs = sys.argv[2:] or twin.ARCHS
    os.makedirs(outdir, exist_ok=True)
    for a in archs:
        for dots in (0, 1) if a != "lr" else (0,):   # model.dots: lr has no backbone
            for seed in range(100, 200):   # the first seed whose ReLU inputs keep the margin
                r = make(a, seed, dots)
                if r:
                    break
            else:
                sys.exit(f"{a}: no seed keeps every ReLU input {RELU_MARGIN} from 0")
            out, info = r
            path = os.path.join(outdir, f"twin_{a}{'_dots' if dots else ''}.bin")
            with open(path, "wb") as f:
                f.write(out)
            print(f"{path}: seed {seed} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                                     else f"{k}={v}" for k, v in info.items()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
