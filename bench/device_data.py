"""Prepare the data `bench/gpu.py` reads on the device machine, small enough for its 64 MiB transfer.

Writes into a git-ignored folder of the checkout (default `data/device`, ignored by the repository's `/data/*` rule):

  data/device/davis/   a few DAVIS-2017 val sequences at full 480p, frames and annotations copied byte for byte,
                       with ImageSets/2017/val.txt listing them (for --davis-root);
  data/device/video/   the training video (any layout `open_videos` reads) re-encoded as JPEG with the short side
                       resized to --short-side (330 px, as the project's reference run of the official code), in the DAVIS layout
                       JPEGImages/480p/<video>/00000.jpg… (the folder name is the layout's; the frames are smaller)
                       and ImageSets/2017/train.txt (for --video-root).

    .venv/bin/python bench/device_data.py                  # shared data -> data/device, prints the sizes
    .venv/bin/python bench/device_data.py --sequences blackswan,car-shadow --out data/device

Fails (exit 1, nothing carried) when the result is larger than --budget-mib.
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from dense_ulearn.cli import add_data_flags
from dense_ulearn.data import DavisDataset, open_videos
from dense_ulearn.options import find_data, prepare_output

MIB = 2 ** 20


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / MIB


def copy_davis(root: Path, names: list[str], out: Path) -> None:
    "The named sequences' frames and annotations (byte copies) and a val.txt listing them."
    for seq in DavisDataset(root, split="val", sequences=names):
        for kind, paths in (("JPEGImages", seq.frame_paths), ("Annotations", seq.mask_paths)):
            dest = out / kind / "480p" / seq.name
            dest.mkdir(parents=True, exist_ok=True)
            for p in paths:
                if p is not None: shutil.copy2(p, dest / p.name)
    (out / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")


def resized_frame(path: Path, short_side: int) -> Image.Image:
    "The frame with its short side brought down to `short_side` (never up), antialiased."
    img = Image.open(path).convert("RGB")
    scale = short_side / min(img.size)
    if scale >= 1: return img
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


def copy_video(root: Path, out: Path, short_side: int, quality: int) -> None:
    "Every training video, frames resized and re-encoded, in the DAVIS layout, with a train.txt."
    names = []
    for seq in open_videos(root, labelled=False):
        dest = out / "JPEGImages" / "480p" / seq.name
        dest.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(seq.frame_paths):
            resized_frame(p, short_side).save(dest / f"{i:05d}.jpg", quality=quality)
        names.append(seq.name)
    (out / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "2017" / "train.txt").write_text("\n".join(names) + "\n")


def travels_unignored(path: Path) -> bool:
    "True when `path` lies inside this checkout and git does not ignore it (it would travel twice)."
    repo, path = Path(__file__).resolve().parents[1], path.resolve()
    if not path.is_relative_to(repo): return False
    done = subprocess.run(["git", "check-ignore", "-q", str(path.relative_to(repo))], cwd=repo)
    return done.returncode != 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(p, davis="to copy sequences from", video="to copy and resize")
    p.add_argument("--sequences", default="blackswan,car-shadow,drift-straight", help="DAVIS val sequences to copy")
    p.add_argument("--short-side", type=int, default=330, help="training-video short side in px (default: 330)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the resized frames (default: 90)")
    p.add_argument("--out", type=Path, default=Path("data/device"), help="output folder (git-ignored; an earlier one written by this script is replaced)")
    p.add_argument("--budget-mib", type=float, default=56, help="fail above this size (the transfer limit is 64 MiB "
                   "for the whole checkout)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.sequences.split(",") if s.strip()]
    if travels_unignored(args.out):
        print(f"warning: {args.out} is not git-ignored: it would travel with the working tree as well as in carry",
              file=sys.stderr)
    found = find_data(args.davis_root, args.video_root)
    if found.davis is None or found.video is None: sys.exit("error: no DAVIS data or training video found (--davis-root, --video-root)")
    prepare_output(args.out, "data", overwrite=True, flag="--out")  # replaces only a folder this script wrote
    copy_davis(found.davis, names, args.out / "davis")
    copy_video(found.video, args.out / "video", args.short_side, args.quality)
    sizes = {name: folder_mib(args.out / name) for name in ("davis", "video")}
    total = sum(sizes.values())
    print(f"{args.out}: davis {sizes['davis']:.1f} MiB ({', '.join(names)}), video {sizes['video']:.1f} MiB "
          f"(short side {args.short_side}); {total:.1f} MiB in all")
    if total > args.budget_mib:
        print(f"error: {total:.1f} MiB is over the budget of {args.budget_mib:g} MiB: copy fewer sequences or lower "
              "--short-side / --quality", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
