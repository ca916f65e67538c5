"""geoaudit: does an image classifier work as well for pictures from poor countries as from rich ones?

Subpackages
-----------
geoaudit.data       ImageNet geo-location builder, GeoShapes demo data, countries and GDP
geoaudit.attacks    perceptual DRO attack, one-step SSIM attack, PGD, FGSM, evaluation
geoaudit.defenses   JPEG, bit depth, individual-fairness centroid defense
geoaudit.models     model zoo, input normalization, checkpoints
geoaudit.train      DRO training (Algorithms 2 and 3) and model populations
geoaudit.audit      per-group accuracy, GLS F-test, population comparison, reports
geoaudit.calibrate  attack-budget calibration from distance matrices
"""

__version__ = "0.2.0"

from geoaudit._errors import DependencyError, GeoauditError, InputError

__all__ = ["DependencyError", "GeoauditError", "InputError", "__version__"]
