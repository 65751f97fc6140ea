"""`python -m engine`: generate, download, convert, info, verify, dub."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.errors import HuMoError, InputError


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="model id (humo-17b, humo-1.7b, tiny), a local folder, or one transformer file (GGUF, fp8/fp16 "
        "safetensors); default: best present",
    )
    p.add_argument("--prompt", help="scene and action")
    p.add_argument("--image", action="append", default=[], help="reference image (repeat for several)")
    p.add_argument("--audio", help="audio or video file whose voice drives the lips")
    p.add_argument("--negative-prompt", default=None, help="default: the official Wan negative prompt")
    p.add_argument("--height", type=int, default=None, help="multiple of 16 (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="multiple of 16 (default: the model's)")
    p.add_argument("--frames", type=int, default=None, help="4n+1 frames; default: from the audio length")
    p.add_argument("--steps", type=int, default=None, help="default: the model's (50; a distilled student's 4)")
    p.add_argument("--seed", type=int, default=None, help="default: random (the file name carries the seed used)")
    p.add_argument("--scale-t", type=float, default=None, help="text guidance scale")
    p.add_argument("--scale-i", type=float, default=None, help="image guidance scale (1.7B / TI)")
    p.add_argument("--scale-a", type=float, default=None, help="audio guidance scale")
    p.add_argument("--switch-timestep", type=int, default=None, help="17B TIA: text-dominant while t > this")
    p.add_argument(
        "--guidance-preset",
        default=None,
        help="official | tighter lip-sync | faster | single pass (default: the model's; official except students)",
    )
    p.add_argument(
        "--guidance-json", default=None, help="a GuidanceSchedule.to_dict() JSON file (overrides the scales)"
    )
    p.add_argument("--scheduler", default="unipc", choices=["unipc", "euler"])
    p.add_argument("--resize-mode", default="pad", choices=["pad", "crop"], help="reference preprocessing")
    p.add_argument("--sequential-branches", action="store_true", help="one forward per guidance branch")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument(
        "--window-frames",
        type=int,
        default=None,
        help="long videos: denoise in overlapping windows of this many frames (97 = trained length)",
    )
    p.add_argument("--window-overlap", type=int, default=4, help="latent frames shared by neighbouring windows")
    p.add_argument(
        "--stream",
        action="store_true",
        help="live: make the clip in chunks and write a fragmented mp4 that plays while it grows (engine/live.py)",
    )
    p.add_argument(
        "--chunk-frames",
        type=int,
        default=None,
        help="chunked generation: chunks of this many frames (4n+1; default with --stream: the model's trained length)",
    )
    p.add_argument("--motion-frames", type=int, default=5, help="chunked: frames (4m+1) carried from chunk to chunk")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="output mp4 (default outputs/<name>_seed<seed>.mp4)")
    from engine.speed import add_scale_args

    add_scale_args(p)
    p.add_argument("--cases", default=None, help="official test-case JSON: {item: {img_paths, audio_path, prompt}}")
    p.add_argument("--out-dir", default="outputs", help="folder for --cases outputs")
    p.add_argument("--gpus", type=int, default=1, help="processes (one per GPU) under torchrun; CPU uses gloo")
    p.add_argument(
        "--parallel",
        default="auto",
        choices=["auto", "ulysses", "ring", "unified", "cfg"],
        help="how --gpus N splits work",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="render on the resident workers of this Ray cluster (a --cases batch runs on all of them at once; "
        "--gpus N: worker groups of N ranks); docs/deploy.md",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="HuMo video generation engine")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generation_args(sub.add_parser("generate", help="make a video from prompt + image(s) + audio"))
    d = sub.add_parser("download", help="download a model's weights into the Hugging Face cache")
    d.add_argument("model", help="humo-17b | humo-1.7b, or a GGUF / repack file: then only its VAE and encoders")
    c = sub.add_parser("convert", help="convert an official checkpoint to diffusers format")
    c.add_argument("--from-official", required=True, help=".pth, sharded folder or .safetensors")
    c.add_argument("--out", required=True, help="output folder (diffusers save_pretrained layout)")
    c.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    sub.add_parser("info", help="devices, memory and which models are present")
    v = sub.add_parser("verify", help="is this video AI-generated? label, watermark and C2PA manifest (exit 0 / 1)")
    v.add_argument("file", help="an mp4 (or any video ffmpeg reads)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_dub_args(sub.add_parser("dub", help="re-voice a video: the chosen face follows new audio (engine/dub.py)"))
    return parser


def _add_dub_args(p: argparse.ArgumentParser) -> None:
    # defaults None: engine.dub.DubRequest holds them (importing engine.dub here would load torch for every command)
    p.add_argument("--video", required=True, help="the footage to dub (any video ffmpeg reads; resampled to 25 fps)")
    p.add_argument("--audio", required=True, help="the new voice (audio, or a video with a sound track)")
    p.add_argument("--prompt", default="A person talking.", help="scene and action")
    p.add_argument("--negative-prompt", default=None, help="default: the official Wan negative prompt")
    p.add_argument("--face", type=int, default=None, help="which face: 0 = largest on the first frame with one")
    p.add_argument("--point", type=float, nargs=2, metavar=("X", "Y"), help="or the face under this pixel of frame 0")
    p.add_argument(
        "--strength", type=float, help="share of the face regenerated: 0.5 (default) mouth and jaw ... 1 all"
    )
    p.add_argument("--dilate", type=float, help="grow the face box by this share (default 0.05)")
    p.add_argument("--feather", type=float, help="soft edge as a share of the face height (default 0.05)")
    p.add_argument("--mask", default=None, help="a mask image of the frame size (white = re-animate) instead")
    p.add_argument("--extend", default="pingpong", choices=("pingpong", "trim"),
                   help="audio longer than the video: extend the video forward-backward, or trim the audio")  # fmt: skip
    p.add_argument("--model", default=None, help="model id or local folder; default: best present")
    p.add_argument("--height", type=int, default=None, help="model size (default: the source at the model's pixels)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=None)
    for flag in ("--scale-t", "--scale-i", "--scale-a"):
        p.add_argument(flag, type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--switch-timestep", type=int, default=None, help="17B TIA: text-dominant while t > this")
    p.add_argument("--guidance-preset", default=None, help="official | tighter lip-sync | faster | single pass")
    p.add_argument("--guidance-json", default=None, help="a GuidanceSchedule.to_dict() JSON file")
    p.add_argument("--scheduler", default="unipc", choices=["unipc", "euler"])
    p.add_argument("--window-frames", type=int, default=None, help="long clips: windows of this many frames")
    p.add_argument("--window-overlap", type=int, default=4)
    p.add_argument("--device", default=None)
    p.add_argument("--memory-mode", default="auto")
    p.add_argument("--out", required=True, help="output mp4")


def cmd_dub(args) -> int:
    """Every input check (video, voice, face, mask) runs before the model is loaded."""
    from engine import dub
    from engine.registry import best_available_model, load_pipeline

    chosen = ("face", "strength", "dilate", "feather", "mask", "height", "width", "seed", "window_frames")
    request = dub.DubRequest(
        video=args.video, audio=args.audio, prompt=args.prompt, negative_prompt=args.negative_prompt,
        point=tuple(args.point) if args.point else None, extend=args.extend, window_overlap=args.window_overlap,
        **{name: getattr(args, name) for name in chosen if getattr(args, name) is not None},
    )  # fmt: skip
    plan = dub.plan_dub(request)
    pipe = load_pipeline(args.model or best_available_model(), device=args.device, scheduler=args.scheduler,
                         memory_mode=args.memory_mode)  # fmt: skip
    request.num_inference_steps = args.steps or pipe.sampling_defaults.num_inference_steps
    request.guidance = _schedule_for(pipe, dub.MODE, args)
    path, record = dub.dub_to_file(pipe, request, args.out, callback_on_step_end=_progress_printer(), plan=plan)
    print(f"wrote {path} seed={record['seed']} frames={record['num_frames']} face={record['dub']['face_box']}")
    return 0


def _schedule_for(pipe, mode: str, args):
    """The run's GuidanceSchedule: a --guidance-json file (the JSON input edge), else a preset with the scales."""
    from engine import guidance

    if args.guidance_json:
        return guidance.GuidanceSchedule.from_dict(json.loads(Path(args.guidance_json).read_text()))
    schedule = guidance.preset_schedule(
        args.guidance_preset or pipe.sampling_defaults.guidance_preset,
        pipe.variant,
        mode,
        scale_t=args.scale_t,
        scale_i=args.scale_i,
        scale_a=args.scale_a,
        switch_timestep=args.switch_timestep,
    )
    return schedule


def _request(pipe, args, prompt: str, images: list[str], audio: str | None):
    from engine.generate import GenerationRequest
    from engine.plan import mode_of

    mode = mode_of(images, audio)
    defaults = pipe.sampling_defaults  # the model's own: a student's 4 steps and single pass, HuMo-nano's 64x64
    return GenerationRequest(
        prompt=prompt,
        images=list(images),
        audio=audio,
        negative_prompt=args.negative_prompt,
        height=args.height or defaults.height,
        width=args.width or defaults.width,
        num_frames=args.frames,
        num_inference_steps=args.steps or defaults.num_inference_steps,
        seed=args.seed,
        guidance=_schedule_for(pipe, mode, args),
        resize_mode=args.resize_mode,
        batch_branches=False if args.sequential_branches else None,
        vae_tiling=args.vae_tiling,
        window_frames=args.window_frames,
        window_overlap=args.window_overlap,
    )


def generate_argv(request, model: str, out, guidance_file=None, options: dict | None = None) -> list[str]:
    """`generate` arguments that make this GenerationRequest with these speed and LoRA options (`options`:
    {"loras": [(path, scale)], "lora_partial", "step_cache", "compile", "attention_backend", "memory_mode"}): how
    a worker group (`--gpus N`, which relaunches the CLI on every rank) receives the whole request. The guidance
    travels as a --guidance-json file (`guidance_file`)."""
    argv = ["--model", model, "--prompt", request.prompt, "--out", str(out), "--resize-mode", request.resize_mode,
            "--window-overlap", str(request.window_overlap)]  # fmt: skip
    named = {"--height": request.height, "--width": request.width, "--steps": request.num_inference_steps,
             "--seed": request.seed, "--frames": request.num_frames, "--negative-prompt": request.negative_prompt,
             "--audio": request.audio, "--window-frames": request.window_frames}  # fmt: skip
    argv += [item for flag, value in named.items() if value is not None for item in (flag, str(value))]
    argv += [item for image in request.images for item in ("--image", str(image))]
    if request.guidance:
        Path(guidance_file).write_text(json.dumps(request.guidance.to_dict()))  # the worker-group edge
        argv += ["--guidance-json", str(guidance_file)]
    argv += ["--vae-tiling"] if request.vae_tiling else []
    argv += ["--sequential-branches"] if request.batch_branches is False else []
    options = options or {}
    argv += [item for path, scale in options.get("loras", ()) for item in ("--lora", f"{path}:{scale}")]
    argv += ["--lora-partial"] if options.get("lora_partial") else []
    argv += ["--compile"] if options.get("compile") else []
    if options.get("step_cache"):
        argv += ["--step-cache", str(options["step_cache"])]
    if options.get("attention_backend") not in (None, "native"):
        argv += ["--attention-backend", options["attention_backend"]]
    if options.get("memory_mode") not in (None, "auto"):
        argv += ["--memory-mode", options["memory_mode"]]
    return argv


def clean_case_prompt(prompt: str) -> str:
    """The official case-file prompt clean-up: strip, underscores to spaces, surrounding double quotes removed."""
    prompt = prompt.strip().replace("_", " ")
    return prompt.strip('"').strip()


def _progress_printer():
    """With --progress, rank 0 prints `HUMO_PROGRESS step total` lines a supervising process (the studio) reads."""
    if not os.environ.get("HUMO_PROGRESS"):
        return None

    def callback(pipe, step, timestep, kwargs):
        index, count = kwargs.get("window") or (0, 1)
        if index == count - 1:  # long videos report after every window: a step is done after its last
            print(f"HUMO_PROGRESS {step + 1} {len(pipe.scheduler.timesteps)}", flush=True)
        return {}

    return callback


def _chunked(args) -> dict | None:
    """--stream / --chunk-frames: the chunked generation's options (engine/live.py), checked before any model work."""
    if not args.stream and args.chunk_frames is None:
        return None
    from engine.live import check_chunking

    if args.window_frames is not None:
        raise InputError("--stream / --chunk-frames replace --window-frames: choose one.", field="window_frames")
    if args.gpus > 1:
        raise InputError("--stream / --chunk-frames run on one device: drop --gpus.", field="gpus")
    if args.chunk_frames is not None:
        check_chunking(args.chunk_frames, args.motion_frames)
    return {"stream": args.stream, "chunk_frames": args.chunk_frames, "motion_frames": args.motion_frames}


def _chunk_printer(chunk) -> None:
    print(f"chunk {chunk.index + 1}/{chunk.count}: frames {chunk.start_frame}-{chunk.end_frame - 1} final "
          f"at {chunk.elapsed_s:.1f} s", flush=True)  # fmt: skip


def _run_one(pipe, request, out: Path, advanced: dict | None = None, chunked: dict | None = None) -> Path | None:
    import random

    from engine.distributed import is_main_process
    from engine.generate import generate_to_file

    if request.seed is None:  # fix the seed first so the file name carries the seed actually used
        request.seed = _shared_seed(random.randint(0, 2**31 - 1))
    if not is_main_process():  # other ranks take part in the computation; only rank 0 writes files
        pipe(**request.pipeline_kwargs(), output_type="latent")
        return None
    out = Path(str(out).replace("{seed}", str(request.seed)))
    if chunked is not None:
        from engine.live import chunked_to_file

        path, record = chunked_to_file(pipe, request, out, callback_on_step_end=_progress_printer(),
                                       on_chunk=_chunk_printer, advanced=advanced, **chunked)  # fmt: skip
    else:
        path, record = generate_to_file(pipe, request, out, callback_on_step_end=_progress_printer(), advanced=advanced)
    banner = " (untrained demo model: output is noise)" if record.get("untrained_demo_model") else ""
    print(f"wrote {path} seed={record['seed']} frames={record['num_frames']} mode={record['mode']}{banner}")
    return path


def _shared_seed(seed: int) -> int:
    """Under torchrun every rank must use rank 0's random seed (identical noise is what keeps ranks in step)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return seed
    value = torch.tensor([seed], dtype=torch.int64)
    dist.broadcast(value, src=0)
    return int(value.item())


def cmd_generate(args, argv: list[str] | None = None) -> int:
    import os

    from engine.registry import best_available_model, get_spec, load_pipeline

    if args.gpus > 1 and not os.environ.get("HUMO_DISTRIBUTED_CHILD") and not args.ray:
        from engine.distributed import launch_generate

        return launch_generate(args.gpus, argv or [])
    distributed = bool(os.environ.get("HUMO_DISTRIBUTED_CHILD")) or "WORLD_SIZE" in os.environ
    device = args.device
    if distributed and device is None:
        from engine.distributed import device_for_rank

        device = device_for_rank()
    chunked = _chunked(args)
    model_id = args.model or best_available_model()
    from engine.speed import apply_recipe, apply_scale_options, cli_options_record

    if getattr(args, "recipe", None):  # before loading: a recipe picks the sampler
        spec = get_spec(model_id)
        apply_recipe(args, spec.base or spec.id)
    if args.ray:  # issue 31: on resident Ray workers; the model is not loaded here (engine/workers.py)
        return generate_on_pool(args, model_id)
    pipe = load_pipeline(model_id, device=device, scheduler=args.scheduler, memory_mode=args.memory_mode or "auto")

    apply_scale_options(pipe, args, device)
    advanced = cli_options_record(args)  # kept in the mp4, so the studio's "load settings" gets them back
    if distributed:
        from engine.distributed import setup_parallel

        setup_parallel(pipe, args.parallel)
    if args.cases:
        cases = _load_cases(args.cases)
        for item, case in cases.items():
            request = _request(
                pipe, args, clean_case_prompt(case["prompt"]), case.get("img_paths") or [], case.get("audio_path")
            )
            _run_one(pipe, request, Path(args.out_dir) / f"{item}_seed{{seed}}.mp4", advanced, chunked)
        _finish_distributed()
        return 0
    if not args.prompt:
        raise InputError("generate needs --prompt (or --cases FILE.json).", field="prompt")
    request = _request(pipe, args, args.prompt, args.image, args.audio)
    out = Path(args.out) if args.out else Path(args.out_dir) / "humo_seed{seed}.mp4"
    _run_one(pipe, request, out, advanced, chunked)
    _finish_distributed()
    return 0


def _finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _load_cases(path: str) -> dict:
    try:
        cases = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise InputError(f"Case file {path} not found.", field="cases") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"Case file {path} is not valid JSON: {exc}", field="cases") from exc
    if not isinstance(cases, dict) or not all(isinstance(c, dict) and "prompt" in c for c in cases.values()):
        raise InputError(
            'Case file must map names to {"img_paths": [...], "audio_path": "...", "prompt": "..."}.', field="cases"
        )
    return cases


def cmd_download(args) -> int:
    from engine.registry import download

    download(args.model)
    print(f"{args.model}: all components present")
    return 0


def cmd_convert(args) -> int:
    import torch

    from engine.convert import convert_official

    out = convert_official(args.from_official, args.out, torch_dtype=getattr(torch, args.dtype))
    print(f"wrote diffusers-format transformer to {out}")
    return 0


def cmd_info(args) -> int:
    from engine.registry import list_models
    from engine.system import describe_devices

    print(describe_devices())
    for model in list_models():
        state = "present" if model["present"] else "missing"
        print(f"{model['id']:<12} {state:<8} {model.get('size_gb', 0):8.2f} GB  {model.get('location') or ''}")
    _print_weight_files()
    return 0


def _print_weight_files() -> None:
    """Single-file transformers (GGUF, fp8/fp16 repacks) under the models folder: `--model FILE` takes them."""
    from engine.models.single_file import find_weight_files
    from engine.registry import models_dir

    files = find_weight_files(models_dir())
    if files:
        print(f"single files under {models_dir()} (use with --model FILE):")
    for report in files:
        usable = "" if report.is_humo else "  (not HuMo: cannot run here)"
        print(f"  {report.path}: {report.summary()}{usable}")


def _watermark_line(mark: dict) -> str:
    if mark["status"] == "too small":
        return f"none: the frames are {mark['message']}"
    if mark["status"] == "no frames":
        return "none: the file has no video frames"
    if mark["status"] == "found":
        line = f"payload {mark['payload']} found in the frames (confidence {mark['confidence']:.2f})"
        if mark["expected"]:
            verdict = "matches" if mark["match"] else "DOES NOT match"
            return f"{line}; {verdict} the payload recorded in the metadata ({mark['expected']})"
        return f"{line}; the metadata records none"
    line = f"none found in the frames (confidence {mark['confidence']:.2f})"
    if mark.get("expected"):
        line += (f"; the metadata records {mark['expected']}: {mark['expected_bits_agreeing']}/48 bits agree "
                 f"(chance p={mark['chance_p']:.1e})")  # fmt: skip
    return line


def _c2pa_line(claim: dict | None) -> str:
    if claim is None:
        return "no manifest"
    if claim.get("state") in ("not checked", "Unreadable"):
        return f"{claim['state']}: {'; '.join(claim['errors'])}"
    state = {"Valid": "valid signature (signer not in a trust list)", "Trusted": "valid signature, trusted signer"}
    actions = ", ".join(a for a in claim["actions"] if a) or "no actions"
    source = (claim["digital_source_type"] or "no digital source type").rsplit("/", 1)[-1]
    verdict = state.get(claim["state"], f"INVALID [{', '.join(claim['errors'])}]")
    return f"manifest by {claim['generator'] or 'unknown'}: {actions}, {source}; {verdict}"


def cmd_verify(args) -> int:
    """Exit 0 when the file says it is AI-generated (label, watermark or C2PA), 1 when nothing does, 2 on error."""
    from engine.provenance import verify_file

    report = verify_file(args.file)
    found = bool(report["evidence"])
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if found else 1
    print(f"file: {args.file}")
    print(f"AI-generated label: {report['label'] or 'none in the metadata'}")
    print(f"model: {report['model_id'] or 'not recorded'}")
    print(f"invisible watermark: {_watermark_line(report['watermark'])}")
    print(f"C2PA: {_c2pa_line(report['c2pa'])}")
    print("verdict: " + (f"AI-generated ({', '.join(report['evidence'])})" if found else "no AI-generation mark found"))
    return 0 if found else 1


COMMANDS = {
    "generate": cmd_generate,
    "download": cmd_download,
    "convert": cmd_convert,
    "info": cmd_info,
    "verify": cmd_verify,
    "dub": cmd_dub,
}


# ---------------------------------------------------------------------------------------------- generate --ray
def generate_on_pool(args, model_id: str) -> int:
    """`python -m engine generate --ray ADDRESS ...` (a --cases batch or one --prompt): every video rendered on the
    cluster's resident workers at once, the model never loaded here. Requests are built as the CLI builds them, from
    the model's spec (its sampling defaults) instead of a loaded pipeline. Returns the exit code (1 if any job failed)."""
    import threading
    from types import SimpleNamespace

    from engine.registry import get_spec, model_source
    from engine.speed import cli_options_record, lora_specs
    from engine.workers import WorkerPool, job_dict

    if args.scheduler != "unipc":
        raise InputError("--ray renders with each model's own scheduler (unipc); leave out --scheduler.",
                         field="scheduler")  # fmt: skip
    spec = get_spec(model_id)  # what the CLI's requests read from a loaded pipeline, from the model's spec
    model = SimpleNamespace(model_id=model_id, variant=spec.variant, sampling_defaults=spec.sampling_defaults())
    if args.cases:
        items = [(name, clean_case_prompt(case["prompt"]), case.get("img_paths") or [], case.get("audio_path"),
                  Path(args.out_dir) / f"{name}_seed{{seed}}.mp4") for name, case in _load_cases(args.cases).items()]  # fmt: skip
    elif args.prompt:
        out = Path(args.out) if args.out else Path(args.out_dir) / "humo_seed{seed}.mp4"
        items = [("humo", args.prompt, args.image, args.audio, out)]
    else:
        raise InputError("generate needs --prompt (or --cases FILE.json).", field="prompt")
    options = {"loras": lora_specs(args.lora), "step_cache": args.step_cache or 0.0, "compile": args.compile,
               "attention_backend": args.attention_backend or "native", "memory_mode": args.memory_mode or "auto",
               "lora_partial": args.lora_partial}  # fmt: skip
    options["loras"] = [(str(Path(p).resolve()), s) for p, s in options["loras"]]  # workers run elsewhere
    source = model_source(model_id)  # a named folder as its path, a local folder or file as an absolute one
    source = str(Path(source).resolve()) if Path(source).exists() else source
    jobs = []
    for _, prompt, images, audio, out in items:
        request = _request(model, args, prompt, [str(Path(p).resolve()) for p in images],
                           str(Path(audio).resolve()) if audio else None)  # fmt: skip
        if request.seed is None:
            request.seed = int.from_bytes(os.urandom(4), "big") >> 1
        path = Path(str(out).replace("{seed}", str(request.seed))).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        jobs.append(job_dict(source, request, path, options=options, record=cli_options_record(args)))
    pool = WorkerPool(args.ray, group_size=max(1, args.gpus), parallel=args.parallel)
    results: list[dict] = [{} for _ in jobs]

    def one(index: int) -> None:
        results[index] = pool.run(jobs[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        pool.shutdown()  # a batch's workers end with it (a studio keeps its own)
    for job, result in zip(jobs, results, strict=True):
        if result["status"] == "done":
            settings = result["settings"]
            print(f"wrote {result['path']} seed={settings['seed']} frames={settings['num_frames']} "
                  f"mode={settings['mode']} (worker {result['worker_id']})")  # fmt: skip
        else:
            print(f"failed {job['out_path']}: {result.get('error')}")
    return 0 if all(r["status"] == "done" for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return cmd_generate(args, argv)
        return COMMANDS[args.command](args)
    except HuMoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
