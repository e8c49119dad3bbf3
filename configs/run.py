"""The config a training run wrote (`W/<stage>/config.json`), as a config file.

Its fields can then be overridden on the command line like those of any config file:

python eval.py --config configs/run.py:runs/demo/full --config.data.data_dir=/data/tfds \
    --workdir runs/demo/eval_elsewhere --runs full=runs/demo/full
python train.py --config configs/run.py:runs/ddc_t/stage1 --workdir runs/ddc_t --stage 3

The argument is a run directory (its stage3, e2e or baseline config), a stage directory or a
config.json.
"""

from aiaic_jax import runs


def get_config(path: str):
    if not path:
        raise ValueError("configs/run.py needs a run: --config configs/run.py:W/<stage>")
    return runs.read_config(path)
