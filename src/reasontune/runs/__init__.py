"""A run's record and its guards: the run folder (status, metrics, config), the trainer callbacks that write it,
the watcher that reads it while training, the checks a run passes before a model loads, and the statistics
reports compute from it. Above the engines (validation asks the curriculum and the model spec), below export and
the stages.
"""
