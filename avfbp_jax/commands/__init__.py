"""The commands: thin command-line layers over the library, the package's top layer.

`avfbp COMMAND` (cli.py) dispatches to synth, prepare, train, evaluate, export, predict, faces and
launch, one module each (`add_arguments(parser)` and `run(args)`); the weight converters run as
`python3 -m avfbp_jax.commands.{fer_convert,mtcnn_convert,alexnet_convert}`. Library code never
imports from here (tests/test_layering.py).
"""
