"""The datasets: every module here registers its dataset(s) in growth.kinds.DATASETS, with the
schema its conf/dataset/<name>.yaml names (``<name>_schema``) and its validator. A new dataset is
a new module here (found by import when the registry is first asked for its entries)."""
