"""Cache the shipped synthetic_tiny's per-query logits and masks on the world's val scenes."""
import sys, time
from pathlib import Path
import numpy as np, torch
from ovseg.data import PanopticDataset
from ovseg.synthetic.scenes import write_synthetic_panoptic, base_novel_split, CATEGORIES
from ovseg.predictor import OVSegPredictor
from ovseg.predictor_base import _output_masks

torch.set_num_threads(1)
split_seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
root = Path("scratch/world")
t0 = time.perf_counter()
js = root / "val" / "panoptic.json"
if not js.exists():
    js = write_synthetic_panoptic(root, 200, split="val", seed=0)
val = PanopticDataset(js.parent / "images", js, js.parent / "panoptic")
print("data", time.perf_counter() - t0)
pred = OVSegPredictor.from_pretrained("synthetic_tiny", use_disk_text_cache=False)
pred.set_vocabulary(val.vocabulary)
print("names", val.vocabulary.names, "seen", pred.seen)
model = pred.model
recs = []
t1 = time.perf_counter()
with torch.no_grad():
    for i in range(len(val)):
        s = val[i]
        f = pred.encode(s["image"], short_side=256)
        out = model.classify({"pred_embeds": f.pred_embeds, "clip_embeds": f.clip_embeds,
                              "clip_vis_dense": f.clip_dense}, pred.classifier, pred._seen)
        masks = _output_masks(f, tuple(s["image"].shape[:2]))
        recs.append(dict(in_vocab=out["in_vocab"][0], out_vocab=out["out_vocab"][0],
                         ensemble=out["ensemble"][0], masks=masks.half(),
                         panoptic=s["panoptic"], segments_info=s["segments_info"],
                         sem_seg=s["sem_seg"]))
print("encode+classify 200 images", time.perf_counter() - t1)
torch.save(dict(recs=recs, names=val.vocabulary.names, is_thing=val.vocabulary.is_thing,
                seen=pred.seen), "scratch/val_cache.pt")
print("total", time.perf_counter() - t0)
