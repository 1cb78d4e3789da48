"""Training losses (the paper's space-time self-training loss and cross-view consistency loss) on real DAVIS clips: a CPU forward + backward step at 128² crops."""
import pytest
import torch

from dense_ulearn.augment import make_aug_view
from dense_ulearn.clips import ClipDataset
from dense_ulearn.data import DavisDataset
from dense_ulearn.encoder import build_encoder
from dense_ulearn.losses import LossConfig, compute_losses

CROP = 128  # training crop of the small-crop preset (16×16 feature maps)
SHORT_SIDE = (128, 160)  # resize range that goes with it
SEQUENCES = ["blackswan", "car-shadow"]  # two clips, so the other clip's anchors act as negatives


@pytest.fixture(scope="module")
def real_batch(davis_root):
    "main, aug [B,5,3,128,128] normalised and θ [B,2,3]: one training clip from each of two real DAVIS videos."
    videos = DavisDataset(davis_root, sequences=SEQUENCES)
    clips = ClipDataset(videos, short_side=SHORT_SIDE, crop=CROP, aug_view=make_aug_view, seed=0, fast_decode=True)
    items = [clips[i] for i in range(len(clips))]
    return tuple(torch.stack([it[key] for it in items]) for key in ("main", "aug", "theta"))


def test_real_clip_forward_backward(real_batch):
    main, aug, theta = real_batch
    B, T = main.shape[:2]
    assert main.shape == aug.shape == (len(SEQUENCES), 5, 3, CROP, CROP) and theta.shape == (B, 2, 3)
    model = build_encoder(seed=0).train()
    cfg = LossConfig()  # N=8 (step 2) and M=4 (step 4) on 16×16 feature maps
    out = compute_losses(model, main, aug, theta, cfg, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["st"]) and torch.isfinite(out["cv"])
    assert out["pseudo"].shape == (B, T, CROP // 8, CROP // 8) and not out["pseudo"].requires_grad
    n_anchors = cfg.anchor_grid ** 2
    for b in range(B):  # pseudo labels stay inside each clip's own anchors
        assert out["pseudo"][b].min() >= b * n_anchors and out["pseudo"][b].max() < (b + 1) * n_anchors
    out["loss"].backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    not_finite = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not not_finite, f"non-finite gradient for {not_finite}"
    all_zero = [n for n, p in params if not p.grad.any()]
    assert not all_zero, f"all-zero gradient for {all_zero}"


def test_real_clip_consistent_views_score_lower(real_batch):
    "Pseudo labels from the clip itself (aug = main, identity θ) are easier targets than those from another clip."
    main = real_batch[0]
    identity = torch.eye(2, 3).expand(len(main), 2, 3)
    model = build_encoder(seed=0).train()
    with torch.no_grad():
        same = compute_losses(model, main, main, identity, LossConfig(), torch.Generator().manual_seed(0))
        swapped = compute_losses(model, main, main.flip(0), identity, LossConfig(), torch.Generator().manual_seed(0))
    assert same["st"] < swapped["st"] and same["cv"] < swapped["cv"], (same, swapped)
