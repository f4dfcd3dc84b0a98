DROP TABLE IF EXISTS nomnom_schema_ledger;
