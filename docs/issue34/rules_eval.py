"""Evaluate panoptic keep rules on cached val logits: PQ/mIoU base/novel, novel recall."""
import sys, time
import numpy as np, torch, torch.nn.functional as F
from ovseg.evaluation import PanopticEvaluator, SemanticEvaluator
from ovseg.modeling import postprocess

C = torch.load(sys.argv[1] if len(sys.argv) > 1 else "scratch/val_cache.pt", weights_only=False)
recs, names, is_thing, seen = C["recs"], C["names"], C["is_thing"], C["seen"]
K = len(names)
seen_t = torch.tensor(seen)
is_thing_t = torch.tensor(is_thing)
cats = [{"id": i, "name": n, "isthing": t} for i, (n, t) in enumerate(zip(names, is_thing))]


def evaluate(rule, label):
    """rule(rec) -> (class_logits (Q,K+1) for semantic+panoptic, keep (Q,) bool or None)."""
    pe = PanopticEvaluator(cats, seen=seen)
    se = SemanticEvaluator(K, class_names=names, seen=seen)
    counts = np.zeros((K, K + 1), np.int64)  # semantic class x panoptic class (K: none)
    for r in recs:
        logits, keep = rule(r)
        masks = r["masks"].float()
        sem = postprocess.semantic_inference(logits, masks).argmax(0).numpy()
        se.update(sem, r["sem_seg"])
        if keep is None:
            keep = postprocess.panoptic_queries(logits)
        pan, segs = panoptic_inference_keep(logits, masks, keep)
        pe.update(r["panoptic"], r["segments_info"], pan.numpy(),
                  [{"id": s["id"], "category_id": s["category_id"]} for s in segs])
        lookup = np.full(int(pan.max()) + 1, K, np.int64)
        for s in segs:
            lookup[s["id"]] = s["category_id"]
        counts += np.bincount(sem.ravel() * (K + 1) + lookup[pan.numpy()].ravel(),
                              minlength=K * (K + 1)).reshape(K, K + 1)
    pq, mi = pe.compute(), se.compute()
    none = counts[:, K] / counts.sum(1).clip(1)
    novel_idx = [i for i in range(K) if not seen[i]]
    pcq = pe.per_class() if hasattr(pe, "per_class") else None
    row = dict(PQ=pq["All"]["pq"], PQ_base=pq["Seen"]["pq"], PQ_novel=pq["Unseen"]["pq"],
               mIoU_base=mi["mIoU_seen"], mIoU_novel=mi["mIoU_unseen"],
               none_novel=100 * counts[novel_idx, K].sum() / counts[novel_idx].sum(),
               none_base=100 * counts[seen, K].sum() / counts[seen].sum())
    pcs = pq["per_class"]; nov = [names[i] for i in range(K) if not seen[i]]
    tp = sum(pcs[n]["tp"] for n in nov); fn = sum(pcs[n]["fn"] for n in nov)
    row["recall_novel"] = 100 * tp / max(tp + fn, 1)
    print(f"recall novel {row['recall_novel']:.1f} ({tp}/{tp+fn})", end=" | ")
    print(f"{label:<34} PQ {row['PQ']:5.1f} base {row['PQ_base']:5.1f} novel {row['PQ_novel']:5.1f} | "
          f"mIoU base {row['mIoU_base']:5.1f} novel {row['mIoU_novel']:5.1f} | none% base "
          f"{row['none_base']:4.1f} novel {row['none_novel']:4.1f} | novel none per class "
          + " ".join(f"{names[i]}:{100*none[i]:.0f}" for i in novel_idx), flush=True)
    return row, pq


def panoptic_inference_keep(logits, masks, keep):
    """panoptic_inference with an explicit keep set: scores = max non-void ensemble prob
    for queries kept although void wins; labels = best non-void class."""
    probs = F.softmax(logits, -1)
    scores, labels = probs[:, :-1].max(-1)
    return postprocess.panoptic_inference_from(scores[keep], labels[keep], masks[keep], is_thing_t) \
        if hasattr(postprocess, "panoptic_inference_from") else _pi(scores[keep], labels[keep], masks[keep])


def _pi(cur_scores, cur_classes, cur_masks, overlap_threshold=0.8):
    cur_masks = cur_masks.sigmoid()
    h, w = cur_masks.shape[-2:]
    pan = torch.zeros((h, w), dtype=torch.int32)
    segs = []
    if cur_masks.shape[0] == 0:
        return pan, segs
    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff, sid = {}, 0
    for k in range(cur_classes.shape[0]):
        cat = int(cur_classes[k]); thing = bool(is_thing_t[cat])
        owned = owner == k; conf = cur_masks[k] >= 0.5
        a, o = int(owned.sum()), int(conf.sum()); seg = owned & conf
        if a == 0 or o == 0 or int(seg.sum()) == 0 or a / o < overlap_threshold:
            continue
        if not thing and cat in stuff:
            pan[seg] = stuff[cat]; continue
        sid += 1
        if not thing:
            stuff[cat] = sid
        pan[seg] = sid
        segs.append({"id": sid, "category_id": cat})
    return pan, segs
