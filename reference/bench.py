"""bench.py - the PyTorch twin as the speed peer: trains on a recorded batch trace
(m3rec-offline --dump-batches, common/eval/trace.h) exactly as m3rec-batchbench trains the C
engine, and computes the prequential AUCs of both from their predictions.

  bench.py train TRACE --arch A --init BLOB [--pred-out FILE] [--blob-out FILE]
                 [--batches N] [--threads 1] [--lr-dense X] [--lr-emb X]
      Starts from the C engine's initial dense blob (m3rec-batchbench init-out=) and the
      C engine's embedding-row initialisation; one pass, predict then train per batch.
      Times the model step (forward, loss, backward, clipping, Adam, sparse Adagrad, the
      stream state: MIEG admission and UPT preferences); reading the trace, mapping keys
      to rows and building tensors happen before the clock starts. Prints
      RESULT engine=torch arch=A rows=N batches=N seconds=S examples_per_s=R
             cpu_examples_per_s=R mean_loss=L
  bench.py auc TRACE PREDS [--batches N]
      Prequential AUC of a prediction file (float32 p_ctr, p_cvr per impression row):
      CTR on every impression, CTCVR on the impression's p_ctr*p_cvr at prediction time
      against its final label (at once for unclicked or already converted impressions,
      else when its settled row arrives), as the worker's scoreboard counts them; exact
      (tie-averaged ranks), all scenarios pooled. Prints AUC ctr=X ctcvr=Y n_ctr=N n_ctcvr=N

What matches the C engine exactly is checked by tests/test_twin.c (forward, loss,
gradients). In training, the optimizer is torch's: Adam (the same formula as
nn_adam_step, float32 rounding aside), clip_grad_norm_ (clip coefficient
max/(norm + 1e-6) instead of max/norm), Adagrad on sparse row gradients with the L2 term
added to the touched rows (emb_grad_apply's step). docs/twin.md lists the differences.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402



# ---- the trace ----
class Trace:
    def __init__(self, path, max_batches=None):
        buf = np.fromfile(path, np.uint8)
        if bytes(buf[:4]) != b"M3BT" or buf[4:8].view("<u4")[0] != 1:
            raise SystemExit(f"{path}: not a version 1 batch trace")
        v = buf[8:136].view("<i4")
        fl = buf[136:168].view("<f4")
        seed = int(buf[168:176].view("<u8")[0])
        k = iter(v.tolist())
        c = twin.Cfg()
        c.arch, c.n_scen, c.n_cat, c.n_num, c.emb_dim = (next(k) for _ in range(5))
        nh = next(k)
        hidden = [next(k) for _ in range(4)]
        c.hidden = hidden[:nh]
        (c.tower_hidden, c.n_exp_shared, c.n_exp_scen, c.n_exp_task, c.mieg, c.upt,
         c.item_warm, c.mieg_hidden, c.upt_heads, c.upt_ffn, c.item_cat_from, c.item_cat_n,
         c.item_num_from, c.item_num_n, c.max_batch, c.dots) = (next(k) for _ in range(16))
        (c.lr_dense, c.lr_emb, c.l2_emb, c.clip_norm, c.mieg_align, c.upt_step,
         c.upt_step_conv, c.acc0_emb) = (float(x) for x in fl[:8])
        c.seed = seed
        self.cfg = c
        nc, nn_ = c.n_cat, c.n_num
        self.dtype = np.dtype([("scen", "<i4"), ("ts", "<i8"), ("cat", "<u8", (nc,)),
                               ("num", "<f4", (nn_,)), ("lab", "<f4", (4,)), ("ref", "<u8")])
        rs = self.dtype.itemsize
        o, first, B, n_imp = 176, [], [], []
        while o + 8 <= len(buf) and (max_batches is None or len(B) < max_batches):
            b, ni = (int(x) for x in buf[o:o + 8].view("<u4"))
            first.append(o + 8)
            B.append(b)
            n_imp.append(ni)
            o += 8 + b * rs
        if o > len(buf):
            raise SystemExit(f"{path}: last batch truncated")
        # rows are contiguous between batch headers: gather them into one array
        rows = np.empty(sum(B), self.dtype)
        r = 0
        for f, b in zip(first, B):
            rows[r:r + b] = np.frombuffer(buf, self.dtype, b, f)
            r += b
        self.rows, self.B, self.n_imp = rows, np.array(B), np.array(n_imp)
        self.start = np.concatenate([[0], np.cumsum(B)])


# ---- the training run ----
class Users:
    """UPT user state (common/engine/users.c) for the users of the trace: P[u,k] and the
    update counts."""

    def __init__(self, n, S, d):
        self.cur = np.zeros((n, S, d), np.float32)
        self.upd = np.zeros((n, S), np.int64)
        self.t_cur, self.t_upd = torch.from_numpy(self.cur), torch.from_numpy(self.upd)

    def read(self, u):
        """users_pref_k for every (row, scenario): (pref (B,S,d), present (B,S))."""
        return self.t_cur[u], self.t_upd[u] > 0

    def update(self, u, k, e, g):
        """users_update for rows u, k at once, in row order: count, P[u,k] += g e."""
        np.add.at(self.upd, (u, k), 1)
        np.add.at(self.cur, (u, k), g[:, None] * e)


def train(args):
    torch.set_num_threads(args.threads)
    if hasattr(torch.sparse, "check_sparse_tensor_invariants"):   # PyTorch 2: opt out, quietly
        torch.sparse.check_sparse_tensor_invariants.disable()
    tr = Trace(args.trace, args.batches)
    c = tr.cfg
    c.arch = twin.ARCHS.index(args.arch)
    if args.lr_dense is not None:
        c.lr_dense = args.lr_dense
    if args.lr_emb is not None:
        c.lr_emb = args.lr_emb
    lay = twin.Layout(c)
    params, _, _, _ = twin.blob_load(lay, open(args.init, "rb").read())
    d, rows = c.emb_dim, tr.rows
    # keys -> embedding rows (the C engine's hash table, precomputed), initialised as
    # emb.c does; user keys -> user state rows
    keys, kidx = np.unique(rows["cat"], return_inverse=True)
    kidx = kidx.reshape(len(rows), c.n_cat)
    W = twin.emb_init_rows(keys, d, c.seed, mieg=lay.use_mieg)
    ukeys, uidx = np.unique(rows["cat"][:, twin.SLOT_USER], return_inverse=True)
    # the model: a flat dense block (blob layout) with parameters viewing it
    flat = torch.from_numpy(params)
    P = {n: torch.nn.Parameter(v) for n, v in lay.views(flat).items()}
    dense = list(P.values())
    emb = torch.nn.Embedding(len(keys), d, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(W))
    adam = torch.optim.Adam(dense, lr=c.lr_dense, betas=(0.9, 0.999), eps=1e-8,
                            foreach=args.foreach)
    adagrad = torch.optim.Adagrad(emb.parameters(), lr=c.lr_emb,
                                  initial_accumulator_value=c.acc0_emb, eps=1e-8)
    counts = np.zeros(len(keys), np.int64)
    users = Users(len(ukeys), c.n_scen, d) if lay.use_upt else None
    # per-batch tensors, built before the clock starts
    batches = []
    for b in range(len(tr.B)):
        s, e = tr.start[b], tr.start[b + 1]
        r = rows[s:e]
        lab = torch.from_numpy(np.ascontiguousarray(r["lab"].T))
        batches.append(dict(
            idx=torch.from_numpy(kidx[s:e]), scen=torch.from_numpy(r["scen"].astype(np.int64)),
            num=torch.from_numpy(np.ascontiguousarray(r["num"])), y1=lab[0], y2=lab[1],
            w1=lab[2], w2=lab[3], lab_np=r["lab"], scen_np=r["scen"], item_np=kidx[s:e, twin.SLOT_ITEM],
            u=torch.from_numpy(uidx[s:e]), u_np=uidx[s:e], n_imp=int(tr.n_imp[b])))
    preds = np.zeros((int(tr.n_imp.sum()), 2), np.float32)
    o, secs, loss_sum = 0, 0.0, 0.0
    cpu0 = time.process_time()
    for bt in batches:
        t0 = time.perf_counter()
        young = pref = pmask = None
        if lay.use_mieg:
            young = torch.from_numpy(counts[bt["item_np"]] < c.item_warm)
        if lay.use_upt:
            pref, pmask = users.read(bt["u"])
        rb = emb(bt["idx"])
        zc, zv, egen, item = twin.forward(lay, P, rb, bt["num"], bt["scen"], young, pref, pmask)
        with torch.no_grad():
            ni = bt["n_imp"]
            preds[o:o + ni, 0] = torch.sigmoid(zc[:ni]).numpy()
            preds[o:o + ni, 1] = torch.sigmoid(zv[:ni]).numpy()
            o += ni
        loss = twin.loss_fn(lay, zc, zv, egen, rb[:, twin.SLOT_ITEM], young, bt["y1"], bt["y2"],
                            bt["w1"], bt["w2"])
        adam.zero_grad(set_to_none=False)   # C steps every dense parameter every batch
        emb.weight.grad = None
        loss.backward()
        if c.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(dense, c.clip_norm)
        adam.step()
        g = emb.weight.grad.coalesce()   # one summed gradient per touched row
        if c.l2_emb > 0:   # emb_grad_apply: g += l2 w on the touched rows
            g.values().add_(emb.weight.data[g.indices()[0]], alpha=c.l2_emb)
        emb.weight.grad = g
        adagrad.step()
        # stream state (m3__stream_state), on the forward pass's values
        lab = bt["lab_np"]
        if lay.use_mieg:
            it = bt["item_np"][lab[:, 2] > 0]
            uniq, inv, cnt = np.unique(it, return_inverse=True, return_counts=True)
            # occurrence number of each trained impression of an item within the batch
            order = np.argsort(inv, kind="stable")
            occ = np.empty(len(it), np.int64)
            occ[order] = np.arange(len(it)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            adm = counts[it] + occ + 1 == c.item_warm
            if adm.any():
                eg = egen.detach()[torch.from_numpy(np.nonzero(lab[:, 2] > 0)[0][adm])]
                with torch.no_grad():
                    emb.weight.index_add_(0, torch.from_numpy(it[adm]), eg)
            np.add.at(counts, uniq, cnt)
        # UPT (m3__stream_state): P += step (y_click - p_ctr) e for every impression,
        # step_conv (y_conv - p_cvr) e for every settled click
        if lay.use_upt:
            xv = item.detach().numpy()
            u, s = bt["u_np"], bt["scen_np"]
            r = lab[:, 2] > 0
            g = np.float32(c.upt_step) * (lab[r, 0] - torch.sigmoid(zc).detach().numpy()[r])
            users.update(u[r], s[r], xv[r], g)
            if c.upt_step_conv > 0:
                r = (lab[:, 3] > 0) & (lab[:, 0] > 0.5)
                g = np.float32(c.upt_step_conv) * (lab[r, 1] - torch.sigmoid(zv).detach().numpy()[r])
                users.update(u[r], s[r], xv[r], g)
        secs += time.perf_counter() - t0
        loss_sum += loss.item()
    cpu = time.process_time() - cpu0
    n = int(tr.B.sum())
    if args.pred_out:
        preds.tofile(args.pred_out)
    if args.blob_out:
        with open(args.blob_out, "wb") as f:
            f.write(twin.blob_save(lay, flat.numpy(), step=len(batches)))
    print(f"RESULT engine=torch arch={args.arch} rows={n} batches={len(batches)} "
          f"seconds={secs:.3f} examples_per_s={n / secs:.0f} cpu_examples_per_s={n / cpu:.0f} "
          f"mean_loss={loss_sum / max(len(batches), 1):.5f}")


# ---- evaluation ----
def auc(p, y):
    """Exact ROC AUC with tie-averaged ranks (Mann-Whitney)."""
    p, y = np.asarray(p, np.float64), np.asarray(y) > 0.5
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    ranks = np.empty(len(p))
    bounds = np.flatnonzero(np.diff(ps)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(p)]])
    avg = (starts + ends + 1) / 2.0          # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return (ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg)


def evaluate(tr, preds):
    rows = tr.rows
    pc, pv = preds[:, 0].astype(np.float32), preds[:, 1].astype(np.float32)
    ctr_p, ctr_y, cv_p, cv_y = [], [], [], []
    pending = {}
    o = 0
    for b in range(len(tr.B)):
        s, ni, e = tr.start[b], int(tr.n_imp[b]), tr.start[b + 1]
        imp = rows[s:s + ni]
        p_ctr, p_ctcvr = pc[o:o + ni], pc[o:o + ni] * pv[o:o + ni]
        o += ni
        lab = imp["lab"]
        ctr_p.append(p_ctr)
        ctr_y.append(lab[:, 0])
        now = lab[:, 3] > 0          # unclicked, or converted while queued
        cv_p.append(p_ctcvr[now])
        cv_y.append(lab[now, 1])
        for ref, p in zip(imp["ref"][~now].tolist(), p_ctcvr[~now].tolist()):
            pending[ref] = p
        st = rows[s + ni:e]
        for ref, y in zip(st["ref"].tolist(), st["lab"][:, 1].tolist()):
            p = pending.pop(ref, None)
            if p is not None:
                cv_p.append(np.array([p], np.float32))
                cv_y.append(np.array([y], np.float32))
    cp, cy = np.concatenate(ctr_p), np.concatenate(ctr_y)
    vp, vy = np.concatenate(cv_p), np.concatenate(cv_y)
    return auc(cp, cy), auc(vp, vy), len(cp), len(vp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("trace")
    t.add_argument("--arch", required=True, choices=twin.ARCHS)
    t.add_argument("--init", required=True)
    t.add_argument("--pred-out")
    t.add_argument("--blob-out")
    t.add_argument("--batches", type=int)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr-dense", type=float, help="override the recorded step size")
    t.add_argument("--lr-emb", type=float, help="override the recorded step size")
    t.add_argument("--foreach", type=int, default=1, help="torch's multi-tensor Adam")
    a = sub.add_parser("auc")
    a.add_argument("trace")
    a.add_argument("preds")
    a.add_argument("--batches", type=int)
    args = ap.parse_args()
    if args.cmd == "train":
        args.foreach = bool(args.foreach)
        train(args)
    else:
        tr = Trace(args.trace, args.batches)
        preds = np.fromfile(args.preds, "<f4").reshape(-1, 2)
        ctr, ctcvr, n1, n2 = evaluate(tr, preds)
        print(f"AUC ctr={ctr:.5f} ctcvr={ctcvr:.5f} n_ctr={n1} n_ctcvr={n2}")


if __name__ == "__main__":
    main()
