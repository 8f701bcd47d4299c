# One image for every part: `tbx run`, `tbx actor NAME` or `tbx gateway`.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir "uv>=0.9,<1"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY schemas schemas
COPY domain domain
COPY bus bus
COPY actors actors
COPY gateway gateway
COPY config config
COPY credentials credentials
COPY tbx tbx
RUN uv sync --frozen --no-dev
ENV DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 3004
ENTRYPOINT ["tbx"]
CMD ["run"]
