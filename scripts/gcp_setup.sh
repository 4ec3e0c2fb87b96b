#!/usr/bin/env bash
# The GCP project's one-time setup for clusters/gcp-l4/cluster.yaml and clusters/kuberay/rayservice.yaml
# (docs/gpu.md, step 1 of "On Compute Engine with the Ray cluster launcher"). Idempotent: what exists
# is kept, and every role binding is (re)applied.
#   scripts/gcp_setup.sh PROJECT BUCKET [REGION]      (gcloud logged in as a project owner)
#   scripts/gcp_setup.sh --print PROJECT BUCKET      prints the commands instead of running them
# Service accounts and their roles (tests/test_clusters.py checks cluster.yaml uses these names):
#   avatar-node           every worker node (cluster.yaml) and GKE node pool: pulls the images, reads
#                         the weights, writes logs and metrics
#   ray-autoscaler-sa-v1  the head, as the Ray launcher sets it (ray up creates it with compute and
#                         storage roles and sets it on the head itself): needs the image too
set -euo pipefail
run=()
if [ "${1:-}" = "--print" ]; then run=(echo); shift; fi
if [ $# -lt 2 ]; then
  echo "usage: $0 [--print] PROJECT BUCKET [REGION]" >&2
  exit 2
fi
project="$1" bucket="$2" region="${3:-us-central1}"
g() { "${run[@]}" gcloud --project "$project" --quiet "$@"; }
exists() { [ ${#run[@]} -eq 0 ] && gcloud --project "$project" "$@" >/dev/null 2>&1; }

NODE_SA="avatar-node@$project.iam.gserviceaccount.com"
HEAD_SA="ray-autoscaler-sa-v1@$project.iam.gserviceaccount.com"
NODE_ROLES=(roles/artifactregistry.reader roles/logging.logWriter roles/monitoring.metricWriter)
HEAD_ROLES=(roles/artifactregistry.reader)

g services enable compute.googleapis.com artifactregistry.googleapis.com file.googleapis.com \
  redis.googleapis.com iam.googleapis.com cloudresourcemanager.googleapis.com container.googleapis.com
exists artifacts repositories describe avatar --location=us \
  || g artifacts repositories create avatar --repository-format=docker --location=us
exists storage buckets describe "gs://$bucket" || g storage buckets create "gs://$bucket" --location="$region"

exists iam service-accounts describe "$NODE_SA" \
  || g iam service-accounts create avatar-node --display-name="talking-avatar nodes"
# The launcher creates its head account on the first `ray up` (with its own roles) unless it exists.
exists iam service-accounts describe "$HEAD_SA" \
  || g iam service-accounts create ray-autoscaler-sa-v1 --display-name="Ray Autoscaler Service Account"
for role in "${NODE_ROLES[@]}"; do
  g projects add-iam-policy-binding "$project" --member="serviceAccount:$NODE_SA" --role="$role" --condition=None
done
for role in "${HEAD_ROLES[@]}"; do
  g projects add-iam-policy-binding "$project" --member="serviceAccount:$HEAD_SA" --role="$role" --condition=None
done
# The weights: read by the nodes (their boot copies gs://BUCKET/models to /models).
g storage buckets add-iam-policy-binding "gs://$bucket" --member="serviceAccount:$NODE_SA" \
  --role=roles/storage.objectViewer
# The head creates the workers with avatar-node as their account: it must be allowed to act as it.
g iam service-accounts add-iam-policy-binding "$NODE_SA" --member="serviceAccount:$HEAD_SA" \
  --role=roles/iam.serviceAccountUser
echo "done: nodes run as $NODE_SA, the head as $HEAD_SA (docs/gpu.md)"
