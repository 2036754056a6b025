exec(open("docs/issue34/run_rules.py").read().split("res = {}")[0])
def keep_all(r):
    ens, P, pv_in, z, best, unseen_best, ms = parts(r)
    return ens, ms > 0  # non-empty only matters via area checks
def kind_aware(r, t=None):
    ens, P, pv_in, z, best, unseen_best, ms = parts(r)
    keep = postprocess.panoptic_queries(ens) | unseen_best
    if t is not None:
        keep = postprocess.panoptic_queries(ens) | (unseen_best & (ms > t))
    return ens, keep
evaluate(official, "official")
evaluate(lambda r: geometric_void(r, False), "A' geometric void (keep only)")
evaluate(keep_all, "K0 keep all, official score")
evaluate(kind_aware, "C kind-aware void (unseen: no veto)")
evaluate(lambda r: kind_aware(r, T_MASK), f"C+mask>{T_MASK:.3f}")
# B variants with official score (semantic unchanged)
def mask_rescue_keep(r, unseen_only=True):
    ens, P, pv_in, z, best, unseen_best, ms = parts(r)
    keep_off = postprocess.panoptic_queries(ens)
    rescue = ~keep_off & (ms > T_MASK) & (unseen_best if unseen_only else True)
    return ens, keep_off | rescue
evaluate(lambda r: mask_rescue_keep(r, False), f"B'' mask>{T_MASK:.3f} any class, official score")
