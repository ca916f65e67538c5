# Your own Hugging Face classifier (a folder saved with save_pretrained) on GeoDE: classes are
# matched by name, countries come from ip_country, groups are World Bank regions.
from geoaudit.audit import audit_classifier
from geoaudit.data import load_country_dataset

ds, fields = load_country_dataset("geode", preset_name="geode")
report, predictions = audit_classifier("hf:my-geode-vit", ds, label_col=fields["label_col"],
                                       group_by="region", min_group_size=5)
print(report.summary())
print(report.model_info["hf:my-geode-vit"]["label_map"])
