# A predictions file whose only geography is a country column (names, ISO2 or ISO3):
# GDP per capita (World Bank, current US$) is added with its year, then the GLS test runs.
import pandas as pd

from geoaudit.audit import audit_predictions
from geoaudit.data import add_geo_columns

preds = pd.read_csv("predictions.csv")  # columns: image_id, label, prediction, country
preds = add_geo_columns(preds, country_col="country")  # unmatched names: an error naming the closest
report = audit_predictions(preds, group="country_iso3", covariate="gdp_per_capita_usd",
                           min_group_size=5)  # 50 by default; this sample is small
print(report.summary())
print(preds.groupby("country_iso3")["gdp_year"].first().to_dict())  # the GDP year of each country
