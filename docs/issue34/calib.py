import pandas as pd, numpy as np
d = pd.read_pickle("scratch/queries.pkl")
d["kept_off"] = d.ensvoid < d.zbest * (1 - d.ensvoid)
pos = d[(d.biou_base >= 0.5)]; neg = d[(d.biou_base < 0.5) & (d.void_frac < 0.5) & (d.area > 0)]
for sub, name in ((lambda g: g[~g.kept_off], "dropped"), (lambda g: g, "all")):
    p, n = sub(pos), sub(neg)
    print(name, "pos", len(p), "neg", len(n))
    for feat in ("mscore", "outbest", "zbest"):
        best = max(((np.mean(p[feat] > t) - np.mean(n[feat] > t), t) for t in np.unique(np.r_[p[feat], n[feat]])))
        from sklearn.metrics import roc_auc_score
        auc = roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p[feat], n[feat]])
        print(f"  {feat}: AUC {auc:.3f} Youden J {best[0]:.3f} at t={best[1]:.3f}; pos>t {np.mean(p[feat]>best[1]):.2f} neg>t {np.mean(n[feat]>best[1]):.2f}")
