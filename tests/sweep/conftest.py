import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # sweep_fakes, shared with tests/report
