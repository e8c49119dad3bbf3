"""DDColor-L with AIAIC at 256x256: as configs/ddcolor_tiny.py with the large backbone.

python train.py --config configs/ddcolor_large.py --workdir runs/ddc_l --stage all \
    --config.data.name=vggsound --config.data.data_dir=/data/tfds \
    --config.init_from=runs/converted/ddcolor_paper \
    --config.stages.stage2.init_from=runs/converted/vggsound_audio
"""

import ml_collections

from configs import ddcolor_tiny


def get_config() -> ml_collections.ConfigDict:
    config = ddcolor_tiny.get_config()
    config.model.backbone = "ddcolor_large"
    return config
