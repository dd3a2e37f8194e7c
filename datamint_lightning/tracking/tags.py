"""Names of the run and model-version tags this package writes (one place, so readers and writers agree)."""

# MLflow's own tags: the UI's "Created by", "Source", description and parent columns read these.
USER = "mlflow.user"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"
DESCRIPTION = "mlflow.note.content"
PARENT_RUN = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment in its GenAI view unless told it holds model training.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

# The run: what trained it and where its files are.
TASK = "task"
OUTPUT_DIR = "output_dir"
ERROR = "error"
PROJECT_ID = "datamint.project_id"
PROJECT_NAME = "datamint.project_name"

# Checkpoints (written by MLflowModelCheckpoint, read by resume and the gate).
CHECKPOINT_DIR = "checkpoint.dir"
CHECKPOINT_LAST = "checkpoint.last"
CHECKPOINT_BEST = "checkpoint.best"
CHECKPOINT_BEST_SCORE = "checkpoint.best_score"
CHECKPOINT_BEST_STEP = "checkpoint.best_step"
CHECKPOINT_BEST_EPOCH = "checkpoint.best_epoch"
CHECKPOINT_MONITOR = "checkpoint.monitor"
CHECKPOINT_MODE = "checkpoint.mode"

# Resume.
RESUME_COUNT = "resume.count"

# The registration gate and the registry.
GATE = "registration.gate"
GATE_REASON = "registration.gate_reason"
MODEL_URI = "datamint.model_uri"
MODEL_ID = "datamint.logged_model_id"
REGISTERED_MODEL = "datamint.registered_model"
CHAMPION = "registration.champion"
NOT_REGISTERED = "registration.skipped"
