# HuMo Studio on a CUDA GPU host:
#   docker build -t humo-studio .
#   docker run --gpus all -p 7860:7860 -v $PWD/data:/app/data -v $HOME/.cache/huggingface:/root/.cache/huggingface humo-studio
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HUMO_HOST=0.0.0.0 HUMO_PORT=7860 HUMO_DATA_DIR=/app/data
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip git ffmpeg \
    && rm -rf /var/lib/apt/lists/* || \
    (apt-get update && apt-get install -y --no-install-recommends software-properties-common \
     && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
     && apt-get install -y --no-install-recommends python3.11 python3.11-venv && rm -rf /var/lib/apt/lists/*)

WORKDIR /app
RUN python3.11 -m venv /app/.venv
# The CUDA build of torch first, so requirements.txt's torch==2.13.0 pin is already satisfied.
RUN /app/.venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
COPY requirements.txt requirements-nodeps.txt ./
RUN /app/.venv/bin/pip install -r requirements.txt && /app/.venv/bin/pip install --no-deps -r requirements-nodeps.txt
COPY . .
RUN touch /app/.venv/.installed

EXPOSE 7860
CMD ["/app/.venv/bin/python", "app.py"]
