import sys; sys.argv = sys.argv[:2]
exec(open("docs/issue34/rules_eval.py").read())
rows = []
for r in recs:
    pin = F.softmax(r["in_vocab"], -1); pout = F.softmax(r["out_vocab"], -1)
    ens = F.softmax(r["ensemble"], -1)
    masks = r["masks"].float()
    binm = masks > 0
    area = binm.flatten(1).sum(1)
    mscore = (masks.sigmoid().flatten(1) * binm.flatten(1)).sum(1) / (area + 1e-6)
    pan = torch.from_numpy(r["panoptic"].astype(np.int64))
    segs = r["segments_info"]
    # base-only view: novel pixels are void
    gt = torch.stack([pan == s["id"] for s in segs]).flatten(1).float() if segs else torch.zeros(0, pan.numel())
    base_rows = [i for i, s in enumerate(segs) if seen[s["category_id"]]]
    novel_px = torch.zeros(pan.numel(), dtype=torch.bool)
    for s in segs:
        if not seen[s["category_id"]]:
            novel_px |= (pan == s["id"]).flatten()
    void_px = (pan == 0).flatten() | novel_px
    bf = binm.flatten(1).float()
    inter = gt @ bf.T
    union = gt.sum(1, keepdim=True) + bf.sum(1) - inter
    iou = inter / union.clamp(min=1)
    for q in range(masks.shape[0]):
        biou_base = max([float(iou[i, q]) for i in base_rows], default=0.0)
        void_frac = float((bf[q].bool() & void_px).sum() / max(float(area[q]), 1))
        best_all = int(iou[:, q].argmax()) if len(segs) else -1
        rows.append(dict(pvin=float(pin[q, -1]), pvout=float(pout[q, -1]), ensvoid=float(ens[q, -1]),
                        zbest=float(ens[q, :-1].max() / (1 - ens[q, -1])), cls=int(ens[q, :-1].argmax()),
                        outbest=float(pout[q, :-1].max() / (1 - pout[q, -1])), mscore=float(mscore[q]),
                        area=int(area[q]), biou_base=biou_base, void_frac=void_frac,
                        biou_all=float(iou[:, q].max()) if len(segs) else 0.0,
                        gt_seen=seen[segs[best_all]["category_id"]] if len(segs) else True))
import pandas as pd
d = pd.DataFrame(rows)
d["cls_seen"] = [seen[c] for c in d.cls]
d.to_pickle("scratch/queries.pkl")
pos = d[d.biou_base >= 0.5]; neg = d[(d.biou_base < 0.5) & (d.void_frac < 0.5) & (d.area > 0)]
empty = d[d.area == 0]
print("n", len(d), "base pos", len(pos), "base neg (labelled area)", len(neg), "empty", len(empty), "mostly-void", int(((d.void_frac >= .5)&(d.area>0)).sum()))
for name, g in (("pos", pos), ("neg", neg)):
    print(name, g[["pvin", "pvout", "zbest", "outbest", "mscore"]].describe(percentiles=[.1, .5, .9]).round(3).to_string())
    print(" cls_seen frac", g.cls_seen.mean().round(3), "kept official", (g.ensvoid < g.zbest * (1 - g.ensvoid)).mean().round(3))
