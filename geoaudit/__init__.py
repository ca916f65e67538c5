"""geoaudit: does an image classifier work as well for pictures from poor countries as from rich ones?

Subpackages
-----------
geoaudit.data       ImageNet geo-location builder, GeoShapes demo data, countries and GDP
geoaudit.attacks    perceptual DRO attack, one-step SSIM attack, PGD, FGSM, evaluation
geoaudit.defenses   JPEG, bit depth, individual-fairness centroid defense
geoaudit.train      model zoo, checkpoints, DRO training and model populations
geoaudit.audit      per-group accuracy, GLS F-test, population comparison, reports
geoaudit.calibrate  attack-budget calibration from distance matrices
"""

__version__ = "0.1.0"

from geoaudit._errors import GeoauditError, InputError

__all__ = ["GeoauditError", "InputError", "__version__"]
