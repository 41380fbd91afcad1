#!/bin/sh
# The project image's entrypoint (deploy/Dockerfile).
#   worker   prepare the checkout in /workspace, register train-flow/nightly (prefect.yaml) to the
#            process pool $WORK_POOL, then run `prefect worker start` (the nightly runs happen here)
#   anything else is run as given (mlflow server, prefect server start, content-moderation serve)
set -eu

if [ "${1:-}" != "worker" ]; then
  exec "$@"
fi

pool="${WORK_POOL:-content-moderation}"
checkout=/workspace/content-moderation
if [ ! -d "$checkout/.git" ]; then
  # First start: the nightly runs work in a clone of the image's checkout, kept on the volume.
  git clone --quiet /opt/content-moderation "$checkout"
fi
cd "$checkout"
if [ -n "${DVC_REMOTE_URL:-}" ]; then
  # The shared remote, for this checkout only (.dvc/config.local); AWS_ENDPOINT_URL_S3 names the endpoint.
  dvc remote add --local --force --default shared "$DVC_REMOTE_URL"
  dvc pull --quiet || echo "dvc pull found nothing to fetch yet (a first night builds everything)"
fi
prefect work-pool inspect "$pool" >/dev/null 2>&1 || prefect work-pool create "$pool" --type process
prefect --no-prompt deploy --name nightly --pool "$pool"
exec prefect worker start --pool "$pool" --type process
