"""HuMo Studio entry point (also the Hugging Face Space `app_file`).

    python app.py [--host 127.0.0.1] [--port 7860] [--data-dir data] [--model tiny] [--public]

Environment: HUMO_HOST, HUMO_PORT, HUMO_DATA_DIR, HUMO_DB_URL, HUMO_MODEL, HUMO_PUBLIC=1 (capped jobs, per-visitor galleries,
no training or downloads), HUMO_AUTH=user:password[,user2:password2] (a login; each user sees only their own),
HUMO_RAY_ADDRESS=head:6379 (jobs on resident Ray workers, docs/deploy.md; default: in this process),
HUMO_MAX_VIDEO_PIXELS=1280x720 (the largest dub source frame without --public; default 1920x1080).
"""

from __future__ import annotations

import argparse
import os
import signal

from studio.context import StudioOptions, env_flag


def parse_args(argv=None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="HuMo Studio")
    # `or`: an empty HUMO_HOST / HUMO_PORT (a blank line in an env file) means the default, not an error
    parser.add_argument("--host", default=os.environ.get("HUMO_HOST") or ("0.0.0.0" if on_space else "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("HUMO_PORT") or 7860)
    parser.add_argument("--data-dir", default=os.environ.get("HUMO_DATA_DIR"))
    parser.add_argument(
        "--db-url",
        default=os.environ.get("HUMO_DB_URL") or None,
        help="gallery database (default: SQLite in the data folder); postgresql://user@host/db lets several "
        "front-ends share one gallery and data folder (a password is better kept in HUMO_DB_URL than in ps)",
    )
    parser.add_argument("--model", default=os.environ.get("HUMO_MODEL"), help="default: the best model present")
    parser.add_argument("--device", default=os.environ.get("HUMO_DEVICE"))
    parser.add_argument("--public", action="store_true", default=env_flag("HUMO_PUBLIC") or on_space)
    parser.add_argument(
        "--auth",
        default=os.environ.get("HUMO_AUTH"),
        help="user:password[,user2:password2]: require a login; each user sees only their own work",
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=int(os.environ.get("HUMO_GPUS", "1")),
        help="run every job on this many GPUs (a torchrun worker group; 'all' = HUMO_GPUS=$(nvidia-smi -L | wc -l))",
    )
    parser.add_argument(
        "--ray",
        default=os.environ.get("HUMO_RAY_ADDRESS") or None,
        metavar="ADDRESS",
        help="render jobs on resident workers of this Ray cluster (head:6379, or 'auto'); see docs/deploy.md. "
        "Default: in this process",
    )
    parser.add_argument(
        "--ray-group-size",
        type=int,
        default=int(os.environ.get("HUMO_RAY_GROUP_SIZE") or 1),
        help="with --ray: ranks (GPUs) per worker; >1 runs each job context-parallel on one node's GPUs",
    )
    parser.add_argument(
        "--max-video-pixels",
        type=video_pixels,
        default=os.environ.get("HUMO_MAX_VIDEO_PIXELS") or None,
        metavar="WxH",
        help="the largest dub source frame a local or --auth studio takes, as WxH or a pixel count (default "
        "1920x1080; a public studio keeps its own 480x832)",
    )
    return parser.parse_args(argv)  # a string default (the environment's) goes through `type` too


def video_pixels(value: str) -> int:
    """`1280x720` (or `1280×720`) or a plain pixel count -> pixels per frame, at least 16×16."""
    text = str(value).strip().lower().replace("×", "x")
    try:
        width, _, height = text.partition("x")
        pixels = int(width) * int(height) if height else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a frame size: {value!r} (use WxH, e.g. 1920x1080)") from None
    if pixels < 16 * 16:
        raise argparse.ArgumentTypeError(f"{value!r} is smaller than 16x16 pixels")
    return pixels


def trusted_proxies(value: str) -> dict:
    """HUMO_TRUSTED_PROXIES: a number of proxy hops whose X-Forwarded-For hop is believed (a Space: 1), or the
    proxies' addresses (comma-separated IPs or networks, for the server's forwarded_allow_ips); empty: none."""
    value = value.strip()
    if not value or value.isdigit():
        return {"trusted_proxies": int(value or 0)}
    return {"proxy_addresses": value}


def main(argv=None) -> None:
    from studio import spaces  # its prepare_models imports the `spaces` package before any weight is placed
    from studio.app import create_app, launch_options
    from studio.owners import parse_auth

    args = parse_args(argv)
    if spaces.on_space() and not args.model:
        args.model = spaces.space_default_model()
    options = StudioOptions(
        data_dir=args.data_dir,
        db_url=args.db_url,
        model=args.model,
        public=args.public,
        device=args.device,
        gpus=args.gpus,
        ray_address=args.ray,
        ray_group_size=args.ray_group_size,
        auth=parse_auth(args.auth),
        **({"max_video_pixels": args.max_video_pixels} if args.max_video_pixels else {}),
        **trusted_proxies(os.environ.get("HUMO_TRUSTED_PROXIES", "1" if spaces.on_space() else "")),
    )
    if spaces.on_zero_gpu():  # 30 steps of HuMo-1.7B at 480p do not fit one ZeroGPU call (studio/spaces.py)
        options.max_steps_public = int(os.environ.get("HUMO_PUBLIC_MAX_STEPS", "12"))
    demo, ctx = create_app(options)
    spaces.prepare_models(ctx.pipeline, [ctx.default_model])  # on a Space: loaded once, before any visitor
    print(f"HuMo Studio: model {ctx.default_model}, data in {ctx.store.data_dir}, http://{args.host}:{args.port}")
    print(f"Gallery database: {ctx.store.engine.url!r} (this front-end: instance {ctx.store.instance_id}).")
    print(f"At start-up: {ctx.startup_report}.")
    if ctx.pool is not None:
        print(f"Jobs render on the Ray cluster at {args.ray} ({len(ctx.pool.rows())} worker(s) so far).")
    # Docker, systemd and Spaces stop a server with SIGTERM: shut down as on Ctrl+C (Gradio closes the server, the
    # cache sweeper's shutdown empties the cache), and empty it here too should the server not get that far.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.launch(server_name=args.host, server_port=args.port, **launch_options(ctx))
    finally:
        from studio.serving import sweep_cache

        sweep_cache(demo, None)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    main()
