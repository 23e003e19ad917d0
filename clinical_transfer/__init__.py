"""clinical-transfer: what frozen audio models "hear" in public clinical audio.

NON-DIAGNOSTIC research software: it measures statistical correlates of labels in public corpora.
It makes no prediction about any person. See LIMITATIONS.md.
"""

__version__ = "0.1.0"
