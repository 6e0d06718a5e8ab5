"""Video in, model input out: PyAV + NumPy, no torch; shared by serving and training.

One module per concept: `sampling` (which frames: plans), `container` (what is refused
before FFmpeg reads a container), `decode` (PyAV: only the planned frames), `transforms`
(crop, normalise), `clip` (`load_clip`: source + the model's input spec -> its input),
`stream` (continuous video: one decoding pass, a clip per window as soon as it is complete;
its `frame_ring`, `pipe` and `url` policy apart).
"""

from media.clip import Clip, InputSpec, Jitter, Views, load_clip
from media.decode import Limits, Source, VideoInfo, probe, read_frames
from media.errors import VideoError

__all__ = [
    "Clip",
    "InputSpec",
    "Jitter",
    "Limits",
    "Source",
    "VideoError",
    "VideoInfo",
    "Views",
    "load_clip",
    "probe",
    "read_frames",
]
