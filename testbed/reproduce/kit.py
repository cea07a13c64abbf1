"""What the reproduction entries use, from the modules that define it (inside the package the
public surface `testbed` is not imported; tests/test_layers.py)."""

from testbed.analyses.plateaus.detect import read_curve
from testbed.methods import make_method
from testbed.models import make_model
from testbed.models.modules import MLP
from testbed.models.sequence import LinearAttention
from testbed.tasks import list_tasks, make_task
from testbed.tasks.prompts import make_prompt_task
from testbed.training.engine import train
from testbed.training.optim import Optimizer, make_optimizer
from testbed.training.prompt_train import train_prompts

__all__ = ["MLP", "LinearAttention", "Optimizer", "list_tasks", "make_method", "make_model", "make_optimizer",
           "make_prompt_task", "make_task", "read_curve", "train", "train_prompts"]
