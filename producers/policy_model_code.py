"""The code of a pulse-policy MLflow model ("model from code": `mlflow.pyfunc.save_model`
copies this file into the model and runs it at load time; see producers/policy_model.py)."""
from mlflow.models import set_model

from producers.policy_model import PulsePolicyModel

set_model(PulsePolicyModel())
