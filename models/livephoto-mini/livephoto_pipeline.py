# LivePhoto (arXiv 2312.02928). DiffusionPipeline.from_pretrained(<this folder>, trust_remote_code=True)
# imports the pipeline class from the installed livephoto package; this file holds no model code.
from model.pipeline import LivePhotoPipeline  # noqa: F401
