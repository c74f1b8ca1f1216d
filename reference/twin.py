"""twin.py - the m3rec model in plain PyTorch: the C engine's twin (a development tool).

Mirrors common/engine/model.c (see docs/twin.md for the revision): the same architectures
(lr, shared_bottom, mmoe, ple, star, m3rec, m3rec_nomieg, m3rec_noupt), the same dense
parameter layout (one flat block, in m3__param_sizes' order), the same embedding-row
initialisation, the same ESMM entire-space loss with MIEG's alignment term, and the C
checkpoint blob format ("M3RB" v1) both ways: blob_load() / blob_save().

The model function is forward(): it takes the embedding rows of a batch and the stream
state that the C engine keeps outside the dense block (is the item young, the user's
preference vectors as the batch reads them), so the same code serves the fixture
(state given, float64) and the speed run (state kept by bench.py, float32).
"""
import math
import struct
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

ARCHS = ["lr", "shared_bottom", "mmoe", "ple", "star", "m3rec", "m3rec_nomieg",
         "m3rec_noupt"]
LR, SHARED_BOTTOM, MMOE, PLE, STAR, M3REC, M3REC_NOMIEG, M3REC_NOUPT = range(8)
SLOT_USER, SLOT_ITEM = 0, 1

BLOB_MAGIC = 0x4252334D      # "M3RB"
BLOB_VERSION = 1
NDIMS = 24
EMB_INIT_SCALE = 0.05
ESMM_EPS = 1e-30
LN_EPS = 1e-5
GAMMA0 = 0.1


@dataclass
class Cfg:
    """m3_model_cfg (model.h), with m3_model_cfg_defaults()' values."""
    arch: int = SHARED_BOTTOM
    n_scen: int = 3
    n_cat: int = 11
    n_num: int = 3
    emb_dim: int = 16
    hidden: list = field(default_factory=lambda: [128, 64])
    tower_hidden: int = 32
    max_batch: int = 512
    lr_dense: float = 0.005
    lr_emb: float = 0.5
    acc0_emb: float = 0.1
    l2_emb: float = 1e-6
    clip_norm: float = 10.0
    seed: int = 42
    n_exp_shared: int = 2
    n_exp_scen: int = 1
    n_exp_task: int = 1
    gate_scale: float = 0.1
    mieg: int = 1
    upt: int = 1
    dots: int = 1
    item_warm: int = 20
    mieg_hidden: int = 64
    mieg_align: float = 0.1
    upt_heads: int = 2
    upt_ffn: int = 32
    upt_step: float = 0.5
    upt_step_conv: float = 0.5
    item_cat_from: int = 6
    item_cat_n: int = 3
    item_num_from: int = 1
    item_num_n: int = 2


class Layout:
    """m3__shape()'s derived sizes, m3__layout()'s slot and gate tables and
    m3__param_sizes()' parameter order: names, shapes and offsets in the flat block."""

    def __init__(self, c: Cfg):
        self.c = c
        a, d, S = c.arch, c.emb_dim, c.n_scen
        self.arch = a
        self.bb = a != LR
        self.use_mieg = bool(c.mieg) and a in (M3REC, M3REC_NOUPT)
        self.use_upt = bool(c.upt) and a in (M3REC, M3REC_NOMIEG)
        self.ud = d + S if self.use_upt else 0   # r_u and the S match scores
        self.xo_emb = self.ud
        self.xo_num = self.ud + c.n_cat * d
        self.xo_scen = self.xo_num + c.n_num
        self.use_dots = bool(c.dots) and self.bb
        self.n_dots = (c.n_cat + 1) * c.n_cat // 2 if self.use_dots else 0
        self.D = self.xo_scen + d + self.n_dots
        self.Dg = c.item_cat_n * d + c.item_num_n if self.use_mieg else 0
        self.h_last = c.hidden[-1] if self.bb else 0
        self.T = self.h_last + d
        self.L = S + 2
        self.H = c.upt_heads if self.use_upt else 1
        self.slot_exp, self.slot_shared, self.gate_slot = [], [], [[], []]
        self.gate_per_scen, self.n_experts = False, 0
        if self.bb:
            self._slots()
        self.names, self.shapes, self.offs = [], [], []
        self.n_params = 0
        self._point()

    def _slots(self):
        c, S = self.c, self.c.n_scen
        Ksh, Ksc, Kt = c.n_exp_shared, c.n_exp_scen, c.n_exp_task
        se, sh, gs = [], [], [[], []]      # se[k][s] = expert of slot k for scenario s

        def slot_all(e):
            se.append([e] * S)
            sh.append(True)
        if self.arch == SHARED_BOTTOM:
            E = 1
            slot_all(0)
            gs[0].append(0); gs[1].append(0)
        elif self.arch == STAR:
            E = S
            se.append(list(range(S)))
            sh.append(S == 1)
            gs[0].append(0); gs[1].append(0)
        elif self.arch == MMOE:
            E = Ksh + Ksc + 2 * Kt
            for e in range(E):
                slot_all(e)
                gs[0].append(e); gs[1].append(e)
        elif self.arch == PLE:
            E = Ksh + Ksc + 2 * Kt
            for e in range(Ksh + Ksc):
                slot_all(e)
                gs[0].append(e); gs[1].append(e)
            for t in range(2):
                for j in range(Kt):
                    gs[t].append(len(se))
                    slot_all(Ksh + Ksc + t * Kt + j)
        else:   # m3rec and its ablations
            E = Ksh + S * Ksc + 2 * Kt
            self.gate_per_scen = True
            for e in range(Ksh):
                slot_all(e)
                gs[0].append(e); gs[1].append(e)
            for j in range(Ksc):
                k = len(se)
                se.append([Ksh + s * Ksc + j for s in range(S)])
                sh.append(S == 1)
                gs[0].append(k); gs[1].append(k)
            for t in range(2):
                for j in range(Kt):
                    gs[t].append(len(se))
                    slot_all(Ksh + S * Ksc + t * Kt + j)
        self.slot_exp, self.slot_shared, self.gate_slot = se, sh, gs
        self.A, self.n_experts = len(se), E

    def _take(self, name, *shape):
        self.names.append(name)
        self.shapes.append(tuple(shape))
        self.offs.append(self.n_params)
        self.n_params += int(np.prod(shape))

    def _point(self):
        c, d, D = self.c, self.c.emb_dim, self.D
        self._take("scen", c.n_scen, d)
        if self.bb:
            n_own = 1 if self.arch == STAR else self.n_experts
            for e in range(n_own):
                inw = D
                for l, h in enumerate(c.hidden):
                    self._take(f"eW{e}.{l}", h, inw)
                    self._take(f"eb{e}.{l}", h)
                    inw = h
            if self.arch == STAR:
                for s in range(c.n_scen):
                    inw = D
                    for l, h in enumerate(c.hidden):
                        self._take(f"sW{s}.{l}", h, inw)
                        self._take(f"sb{s}.{l}", h)
                        inw = h
            for gi in range(2 * c.n_scen if self.gate_per_scen else 2):
                G = len(self.gate_slot[gi % 2])
                if G < 2:
                    continue
                self._take(f"gW{gi}", G, D)
                self._take(f"gb{gi}", G)
            for t in range(2):
                self._take(f"tw1.{t}", c.tower_hidden, self.T)
                self._take(f"tb1.{t}", c.tower_hidden)
                self._take(f"tw2.{t}", 1, c.tower_hidden)
                self._take(f"tb2.{t}", 1)
        else:
            for t in range(2):
                self._take(f"lw{t}", 1, D)
                self._take(f"lb{t}", 1)
        if self.use_mieg:
            mh = c.mieg_hidden
            self._take("mw1", mh, self.Dg)
            self._take("mb1", mh)
            self._take("mw2", d, mh)
            self._take("mb2", d)
            self._take("mgamma", 1)
        if self.use_upt:
            Fw = c.upt_ffn
            self._take("uqw", d, 2 * d)
            self._take("uqb", d)
            self._take("unohist", d)
            for n in ("uWQ", "uWK", "uWV", "uWO"):
                self._take(n, d, d)
            self._take("ubO", d)
            for n in ("ul1g", "ul1b", "ul2g", "ul2b"):
                self._take(n, d)
            self._take("uf1w", Fw, d)
            self._take("uf1b", Fw)
            self._take("uf2w", d, Fw)
            self._take("uf2b", d)

    def views(self, flat):
        """name -> view of flat (the C struct of pointers into the block)."""
        return {n: flat[o:o + int(np.prod(s))].view(*s)
                for n, s, o in zip(self.names, self.shapes, self.offs)}

    # ---- the blob: m3__dims, m3__cfg_hash, m3_blob_save / m3_blob_load ----
    def dims(self):
        c = self.c
        w = [c.arch, c.n_scen, c.n_cat, c.n_num, c.emb_dim, len(c.hidden)]
        w += [c.hidden[l] if l < len(c.hidden) else 0 for l in range(4)]
        w += [c.tower_hidden, c.n_exp_shared, c.n_exp_scen, c.n_exp_task,
              int(self.use_mieg), int(self.use_upt),
              c.mieg_hidden if self.use_mieg else 0,
              c.item_cat_n if self.use_mieg else 0,
              c.item_num_n if self.use_mieg else 0,
              c.upt_heads if self.use_upt else 0,
              c.upt_ffn if self.use_upt else 0, self.D, int(self.use_dots)]
        return w + [0] * (NDIMS - len(w))

    def cfg_hash(self):
        h = fnv1a(FNV0, struct.pack("<24I", *self.dims()))
        c = self.c
        return fnv1a(h, struct.pack("<4i", c.item_cat_from, c.item_cat_n, c.item_num_from,
                                    c.item_num_n))


FNV0 = 0xCBF29CE484222325


def fnv1a(h, data):
    """FNV-1a 64 (hash_fnv64, common/base/hash.h)."""
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def blob_save(lay, params, adam_m=None, adam_v=None, step=0):
    """The C blob of float32 arrays params, m, v (n_params each): bytes."""
    n = lay.n_params
    z = np.zeros(n, np.float32)
    body = struct.pack("<II", BLOB_MAGIC, BLOB_VERSION) + struct.pack("<24I", *lay.dims())
    body += struct.pack("<QQq", lay.cfg_hash(), n, step)
    for a in (params, adam_m if adam_m is not None else z, adam_v if adam_v is not None else z):
        a = np.ascontiguousarray(a, dtype="<f4")
        assert a.size == n
        body += a.tobytes()
    return body + struct.pack("<Q", fnv1a(FNV0, body))


def blob_load(lay, buf):
    """(params, m, v, step) from a C blob; ValueError naming the first mismatch, as
    m3_blob_load refuses."""
    head = 8 + 4 * NDIMS + 24
    if len(buf) < head:
        raise ValueError(f"model blob: {len(buf)} bytes, shorter than its header")
    magic, ver = struct.unpack_from("<II", buf, 0)
    if magic != BLOB_MAGIC:
        raise ValueError(f"model blob: bad magic 0x{magic:08x}")
    if ver != BLOB_VERSION:
        raise ValueError(f"model blob: version {ver}, this twin reads {BLOB_VERSION}")
    dims = struct.unpack_from("<24I", buf, 8)
    if list(dims) != lay.dims():
        k = next(i for i, (a, b) in enumerate(zip(dims, lay.dims())) if a != b)
        raise ValueError(f"model blob: dimension word {k} is {dims[k]}, "
                         f"this model has {lay.dims()[k]}")
    h, n, step = struct.unpack_from("<QQq", buf, 8 + 4 * NDIMS)
    if h != lay.cfg_hash():
        raise ValueError("model blob: configuration hash differs")
    if n != lay.n_params or len(buf) != head + 12 * n + 8:
        raise ValueError(f"model blob: {n} parameters in {len(buf)} bytes, expected "
                         f"{lay.n_params}")
    (s,) = struct.unpack_from("<Q", buf, head + 12 * n)
    if s != fnv1a(FNV0, buf[:head + 12 * n]):
        raise ValueError("model blob: checksum mismatch (corrupt)")
    a = np.frombuffer(buf, "<f4", 3 * n, head).astype(np.float32)
    return a[:n].copy(), a[n:2 * n].copy(), a[2 * n:].copy(), step


# ---- embedding rows: emb.c's initialisation, vectorised ----
M64 = 0xFFFFFFFFFFFFFFFF


def _mix(x):
    """splitmix64 finalizer on a uint64 array (hash_mix64, common/base/hash.h)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def emb_init_rows(keys, d, seed, mieg=False):
    """The rows emb_lookup_init() creates for keys (uint64 array): uniform in
    +-EMB_INIT_SCALE from (seed, key, coordinate); with MIEG an item row (slot 1)
    starts at zero. float32 (n, d)."""
    keys = np.asarray(keys, np.uint64)
    base = _mix(np.uint64(seed) ^ _mix(keys))
    with np.errstate(over="ignore"):
        r = _mix(base[:, None] + np.arange(d, dtype=np.uint64)[None, :])
    u = (r >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)
    w = (np.float32(2.0) * u - np.float32(1.0)) * np.float32(EMB_INIT_SCALE)
    if mieg:
        w[(keys >> np.uint64(56)) == SLOT_ITEM] = 0.0
    return w


def feat_key(slot, value):
    """m3_feat_key for one int value (arch.c)."""
    x = _mix(np.array([value & M64], np.uint64))[0] & np.uint64(0x00FFFFFFFFFFFFFF)
    return int(x) | ((slot & 0xFF) << 56)


# ---- the model ----
def _group(lay, scen):
    """Stable sort by scenario, as m3__group: (perm, offsets) or None when no slot or
    gate depends on the scenario (then every block is the whole batch)."""
    if lay.gate_per_scen or not all(lay.slot_shared):
        perm = torch.sort(scen, stable=True)[1]
        cnt = torch.bincount(scen, minlength=lay.c.n_scen).tolist()
        off = [0]
        for n in cnt:
            off.append(off[-1] + n)
        return perm, off
    return None, None


def forward(lay, P, rows, num, scen, young=None, pref=None, pmask=None):
    """The forward pass of m3_forward for one batch.

    P     name -> parameter tensor (Layout.views of the flat block)
    rows  (B, n_cat, d) the embedding rows of the slots (for a MIEG item: its delta)
    num   (B, n_num); scen (B,) long
    young (B,) bool: the item is young (MIEG: its slot is e_gen + delta)
    pref  (B, S, d), pmask (B, S) bool: P[u, k] as the row reads it (UPT: the user table's,
          or for a settled row the snapshot it was scored with)
    Returns (z_ctr, z_cvr, egen or None, x_item): logits in the caller's order, the
    generated embeddings and the item slot of x (what UPT's preference update reads)."""
    c, d, B = lay.c, lay.c.emb_dim, rows.shape[0]
    perm, off = _group(lay, scen)
    if perm is not None:     # grouped order, as the C engine computes
        rows, num, scen = rows[perm], num[perm], scen[perm]
        if young is not None:
            young = young[perm]
        if pref is not None:
            pref, pmask = pref[perm], pmask[perm]
    semb = P["scen"][scen]                                  # (B, d)
    egen = None
    item = rows[:, SLOT_ITEM]
    if lay.use_mieg:
        cf, cn, nf, nn_ = c.item_cat_from, c.item_cat_n, c.item_num_from, c.item_num_n
        # the generator reads the item's field rows as fixed features (stop-gradient)
        gin = torch.cat([rows[:, cf:cf + cn].reshape(B, cn * d).detach(), num[:, nf:nf + nn_]],
                        1)
        gh = torch.relu(F.linear(gin, P["mw1"], P["mb1"]))
        egen = P["mgamma"] * torch.tanh(F.linear(gh, P["mw2"], P["mb2"]))
        item = torch.where(young[:, None], egen + item, item)
    if lay.use_mieg:
        parts = [rows[:, :SLOT_ITEM].reshape(B, -1), item,
                 rows[:, SLOT_ITEM + 1:].reshape(B, -1), num, semb]
    else:
        parts = [rows.reshape(B, -1), num, semb]
    if lay.use_dots:   # every pair of the field vectors and the scenario's, i < j
        v = torch.cat([rows[:, :SLOT_ITEM], item[:, None], rows[:, SLOT_ITEM + 1:],
                       semb[:, None]], 1)                    # (B, n_cat + 1, d)
        i, j = torch.triu_indices(c.n_cat + 1, c.n_cat + 1, 1)
        parts.append((v[:, i] * v[:, j]).sum(2))
    if lay.use_upt:
        parts.insert(0, _upt(lay, P, item, semb, pref, pmask))
    x = torch.cat(parts, 1)                                 # (B, D)
    if lay.bb:
        z = _backbone(lay, P, x, semb, off)
    else:
        z = [F.linear(x, P[f"lw{t}"], P[f"lb{t}"])[:, 0] for t in range(2)]
    if perm is not None:
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(B, device=perm.device)
        z = [zt[inv] for zt in z]
        item = item[inv]
        egen = egen[inv] if egen is not None else None
    return z[0], z[1], egen, item


def _upt(lay, P, item, semb, pref, pmask):
    """UPT: [r_u (B, d) ; match (B, S)]: r_u is the query position of one encoder block over
    the tokens [q ; no-history ; P[u,k] + scen_k], match the item's match with each
    scenario's preference (m3__upt_forward)."""
    c, d, B = lay.c, lay.c.emb_dim, item.shape[0]
    S, L, H = c.n_scen, lay.L, lay.H
    dh = d // H
    uq = F.linear(torch.cat([item, semb], 1), P["uqw"], P["uqb"])
    hist = torch.where(pmask[:, :, None], pref + P["scen"][None], torch.zeros_like(pref))
    tok = torch.cat([uq[:, None], P["unohist"].expand(B, 1, d), hist], 1)      # (B, L, d)
    mask = torch.cat([torch.ones(B, 2, dtype=torch.bool, device=pmask.device), pmask], 1)
    q = F.linear(uq, P["uWQ"]).view(B, H, 1, dh)
    k = F.linear(tok, P["uWK"]).view(B, L, H, dh).transpose(1, 2)              # (B, H, L, dh)
    v = F.linear(tok, P["uWV"]).view(B, L, H, dh).transpose(1, 2)
    s = (q @ k.transpose(2, 3)) * (1.0 / math.sqrt(dh))      # (B, H, 1, L)
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    ctx = (torch.softmax(s, -1) @ v).reshape(B, d)
    h1 = F.layer_norm(uq + F.linear(ctx, P["uWO"], P["ubO"]), (d,), P["ul1g"], P["ul1b"],
                      LN_EPS)
    f2 = F.linear(torch.relu(F.linear(h1, P["uf1w"], P["uf1b"])), P["uf2w"], P["uf2b"])
    r_u = F.layer_norm(h1 + f2, (d,), P["ul2g"], P["ul2b"], LN_EPS)
    # the item's match with the user's preference in each scenario, <P[u,k], item>/sqrt(d)
    # (0 without history there); P is stream state, not a parameter
    pm = torch.where(pmask[:, :, None], pref, torch.zeros_like(pref))
    match = (pm * item[:, None, :]).sum(-1) * (1.0 / math.sqrt(d))
    return torch.cat([r_u, match], 1)


def _expert(lay, P, x, e, s=None):
    """Expert e's MLP (STAR: scenario s's composed weights W_sh .* W_s, b_sh + b_s)."""
    for l in range(len(lay.c.hidden)):
        if lay.arch == STAR:   # one shared MLP (expert 0) times scenario s's factors
            W, b = P[f"eW0.{l}"] * P[f"sW{s}.{l}"], P[f"eb0.{l}"] + P[f"sb{s}.{l}"]
        else:
            W, b = P[f"eW{e}.{l}"], P[f"eb{e}.{l}"]
        x = torch.relu(F.linear(x, W, b))
    return x


def _backbone(lay, P, x, semb, off):
    S = lay.c.n_scen
    act = []
    for k in range(lay.A):
        if lay.slot_shared[k]:
            act.append(_expert(lay, P, x, lay.slot_exp[k][0], 0))
        else:
            act.append(torch.cat([_expert(lay, P, x[off[s]:off[s + 1]], lay.slot_exp[k][s], s)
                                  for s in range(S) if off[s + 1] > off[s]], 0))
    z = []
    for t in range(2):
        gs = lay.gate_slot[t]
        if len(gs) == 1:
            h = act[gs[0]]
        else:
            if lay.gate_per_scen:
                logit = torch.cat([F.linear(x[off[s]:off[s + 1]], P[f"gW{2 * s + t}"],
                                            P[f"gb{2 * s + t}"])
                                   for s in range(S) if off[s + 1] > off[s]], 0)
            else:
                logit = F.linear(x, P[f"gW{t}"], P[f"gb{t}"])
            g = torch.softmax(lay.c.gate_scale * logit, 1)
            h = sum(g[:, j:j + 1] * act[k] for j, k in enumerate(gs))
        t1 = torch.relu(F.linear(torch.cat([h, semb], 1), P[f"tw1.{t}"], P[f"tb1.{t}"]))
        z.append(F.linear(t1, P[f"tw2.{t}"], P[f"tb2.{t}"])[:, 0])
    return z


def esmm_sum(a, c, y1, y2, w1, w2):
    """Sum over the batch of w_ctr BCE(s(a), y_click) + w_ctcvr BCE(s(a)s(c), y_conv)
    (nn_esmm_forward: the same softplus forms and the same clamp of 1 - q)."""
    l1 = y1 * F.softplus(-a) + (1 - y1) * F.softplus(a)
    one_m_q = torch.clamp(torch.sigmoid(-a) + torch.sigmoid(a) * torch.sigmoid(-c), min=ESMM_EPS)
    l2 = y2 * (F.softplus(-a) + F.softplus(-c)) - (1 - y2) * torch.log(one_m_q)
    return (w1 * l1 + w2 * l2).sum()


def loss_fn(lay, z_ctr, z_cvr, egen, item_rows, young, y1, y2, w1, w2):
    """m3__loss: ESMM mean over the batch plus mieg_align/B * sum over warm items of
    ||e_gen - stopgrad(row)||^2."""
    B = z_ctr.shape[0]
    tot = esmm_sum(z_ctr, z_cvr, y1, y2, w1, w2)
    if lay.use_mieg and lay.c.mieg_align > 0:
        warm = (~young).to(egen.dtype)[:, None]
        tot = tot + lay.c.mieg_align * (warm * (egen - item_rows.detach()) ** 2).sum()
    return tot / B
