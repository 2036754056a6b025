import sys; cache = sys.argv[1] if len(sys.argv) > 1 else "scratch/val_cache.pt"; sys.argv = sys.argv[:1] + [cache]
exec(open("docs/issue34/rules_eval.py").read())
ALPHA, BETA = 0.4, 0.8
T_MASK = float(sys.argv[2]) if len(sys.argv) > 2 else 0.807

def parts(r):
    ens = r["ensemble"]; P = F.softmax(ens, -1)
    pv_in = P[:, -1]
    z = P[:, :-1] / (1 - pv_in[:, None]).clamp(min=1e-12)  # softmax(z)
    best = z.argmax(-1)
    unseen_best = ~seen_t[best]
    m = r["masks"].float(); b = m > 0
    ms = (m.sigmoid() * b).flatten(1).sum(1) / (b.flatten(1).sum(1) + 1e-6)
    return ens, P, pv_in, z, best, unseen_best, ms

def with_void(z, pv):
    return torch.log(torch.cat([z * (1 - pv[:, None]), pv[:, None]], -1) + 1e-8)

def official(r):
    return r["ensemble"], None

def geometric_void(r, full=True):
    ens, P, pv_in, z, best, unseen_best, ms = parts(r)
    pv_out = F.softmax(r["out_vocab"], -1)[:, -1]
    w = torch.where(unseen_best, torch.tensor(BETA), torch.tensor(ALPHA))
    v = pv_in.clamp(min=1e-12) ** (1 - w) * pv_out.clamp(min=1e-12) ** w
    o = (1 - pv_in).clamp(min=1e-12) ** (1 - w) * (1 - pv_out).clamp(min=1e-12) ** w
    logits = with_void(z, v / (v + o))
    if full:
        return logits, None
    return ens, postprocess.panoptic_queries(logits)

def mask_rescue(r, unseen_only=True, score="z"):
    ens, P, pv_in, z, best, unseen_best, ms = parts(r)
    keep_off = postprocess.panoptic_queries(ens)
    rescue = ~keep_off & (ms > T_MASK) & (unseen_best if unseen_only else True)
    # rescued queries: void probability from the mask head's objectness instead of in-vocab
    pv = pv_in.clone()
    if score == "z":
        pv[rescue] = 0.0
    elif score == "ms":
        pv[rescue] = 1 - ms[rescue]
    return with_void(z, pv), keep_off | rescue

res = {}
res["official"] = evaluate(official, "official")
res["geo_void_full"] = evaluate(geometric_void, "A geometric void (full P)")
res["geo_void_keep"] = evaluate(lambda r: geometric_void(r, False), "A' geometric void (keep only)")
for sc in ("z", "ms"):
    res[f"mask_unseen_{sc}"] = evaluate(lambda r: mask_rescue(r, True, sc), f"B mask>{T_MASK:.3f} unseen, score {sc}")
res["mask_any_z"] = evaluate(lambda r: mask_rescue(r, False, "z"), f"B' mask>{T_MASK:.3f} any class, z")
