"""Where everything is kept: database engines and the database's clock (:mod:`.database`), the
service's tables (:mod:`.tables`) and their Alembic migrations (:mod:`.migrate`, ``migrations/``),
and everything done with Optuna's storage (:mod:`.optuna_bridge`)."""
