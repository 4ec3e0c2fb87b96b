"""The capacity planner: a discrete-event model of the talking-avatar graph, for sizing a cluster
before renting it and for checking the model against what `benchmarks/run.py` measured here."""
