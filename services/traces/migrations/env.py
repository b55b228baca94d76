from doorward_kit.migrations import run_alembic_env
from services.traces.models import Base

run_alembic_env(Base.metadata)
