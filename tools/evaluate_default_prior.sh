#!/usr/bin/env bash
# Every measurement behind the default prior's model card (1 torch thread each, 2-core CPU).
# Run from the repository root after the prior is in src/napari_svi/priors/default/.
set -euo pipefail
E=benchmarks/results/prior
mkdir -p "$E"
export OMP_NUM_THREADS=1
py=".venv/bin/python"
$py tools/evaluate_prior.py samples --prior default -o "$E" --crop 64 --steps 50
$py tools/evaluate_prior.py speed --prior default -o "$E"
$py tools/evaluate_prior.py denoise --prior default -o "$E" --clips 3 --crop 96
$py tools/evaluate_prior.py compare --prior default -o "$E" --clips 3 --frames 16 --crop 96
$py tools/evaluate_prior.py steps --prior default -o "$E" --clips 2 --frames 16 --crop 64
$py tools/evaluate_prior.py gamma --prior default -o "$E" --clips 3 --frames 16 --crop 64 --gammas 0.3,1,3,10,30
cp "$E/samples.png" src/napari_svi/priors/default/samples.png
$py tools/write_model_card.py src/napari_svi/priors/default "$E"
