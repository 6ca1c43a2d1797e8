"""The Core tables of tracking/listings.py read the columns schema/models.py declares, with the same types."""

from __future__ import annotations

from schema.models import Base
from tracking import listings


def test_listing_tables_match_the_models() -> None:
    for light in listings.TABLES:
        model = Base.metadata.tables[light.name]
        for col in light.columns:
            assert col.name in model.columns, f"{light.name}.{col.name} is not in schema/models.py"
            declared = model.columns[col.name].type
            assert isinstance(col.type, type(declared)) or isinstance(declared, type(col.type)), (
                f"{light.name}.{col.name}: {type(col.type).__name__} here, {type(declared).__name__} in the model"
            )
