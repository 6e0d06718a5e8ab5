"""`sttm label`: a model over a whole video archive, as a Ray Data job — here by default (a
local Ray started for the job), on a Ray cluster when one machine is not enough. Torch-free:
it imports `runtime` and `media` only, like the servers, and gives the same answers as `sttm
predict` for every file.

One module per concept: `inputs` (INPUT arguments -> videos with ids), `decode` (the CPU
tasks: a video -> the model's input, or a row with its error code), `infer` (the actors
holding a runtime backend), `engine` (the Ray Data pipeline; starting or joining Ray),
`rows` (the output's schema), `parts` (complete parts, `--resume`), `progress` (the line and
the summary), `job` (one run, start to end).
"""
