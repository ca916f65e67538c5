# A timm model by name on Dollar Street: top-5 accuracy by country against GDP per capita,
# then by band of household income.  The weights come from a local file (or timm's cache).
from geoaudit.audit import audit_classifier, write_report
from geoaudit.data import load_country_dataset

ds, fields = load_country_dataset("dollar_street", preset_name="dollar-street")
by_country, predictions = audit_classifier(
    "timm:resnet18", ds, weights="resnet18.pth", label_col=fields["label_col"], top_k=5,
    min_group_size=5)  # 50 by default; this sample is small
print(by_country.summary())
by_income, _ = audit_classifier(
    "timm:resnet18", ds, weights="resnet18.pth", label_col=fields["label_col"], top_k=5,
    group_by="income-band", income_col=fields["income_col"], min_group_size=5)
print(by_income.summary())
write_report(by_income, "audit_dollar_street", predictions=predictions)
