# bulk-cancel's container image: the `bulk-cancel` command and nothing else.
#   docker build -t registry.example.com/bulk-cancel:0.1.0 .
#   docker run --rm -e EIGHTX8_API_KEY -v "$PWD:/data" registry.example.com/bulk-cancel:0.1.0 \
#       run --input /data/umids.csv --subaccount acme_hq --output /data/results.csv
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bulk_cancel ./bulk_cancel
RUN pip install . \
    && rm -rf /src \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin bulk-cancel

# The numeric id lets Kubernetes check runAsNonRoot.
USER 10001
WORKDIR /data
ENTRYPOINT ["bulk-cancel"]
CMD ["--help"]
