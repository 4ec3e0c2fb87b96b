"""The capacity planner: a discrete-event model of the talking-avatar graph, for sizing a cluster
before renting it, checked against what `benchmarks/run.py` measured on this machine.

What it models, and nothing more:
- sessions that speak an utterance, wait for the end of speech to be detected (endpointing), get a
  reply streamed as the real turn does (`serve_app/turn.py`): ASR, then the LLM writing sentences,
  TTS speaking each sentence in turn as audio chunks, the animator rendering the audio it has in
  pieces (the turn's first 0.4 s, then about 1 s, coalescing what has piled up) and the client
  playing fragments back to back; then the user thinks and speaks again;
- each stage as a deployment of replicas with `max_ongoing_requests` slots behind one FIFO queue
  (Serve's router sends a request to the least busy replica with a free slot, or holds it);
- a cost per request: fixed + per audio second (ASR, TTS with its chunking, animator), or time to
  first token + tokens at a per-stream speed that falls as the batch grows (vLLM);
- contention: every running request keeps `demand` units of its node busy (cores on a CPU machine,
  a whole GPU on an L4 unless told otherwise: CUDA time-slices processes that share a card), and
  when a node's demand exceeds its capacity every request on it slows in proportion (processor
  sharing);
- fractional GPU packing per node (`num_gpus` and `num_cpus` on nodes of the stage's role, a
  deployment's replicas spread over the nodes as Serve does), new nodes after `start_s`, new
  replicas after their load time, idle nodes given back after a timeout;
- Serve's default autoscaling policy as Ray 2.60 writes it, the controller seeing metrics as they
  were at the last push (every 10 s by default);
- optionally, interference: a request's work grows by a measured factor for each kind of request
  running beside it on its node, weighted by the share of the node's other capacity that one holds
  (`StageCost.interference`; on 2 cores two llama.cpp decoders spend about 40 % more CPU per token);
- optionally, calls of the same size varying (`Scenario.jitter`, lognormal) as repeated calls do;
- optionally, per clip as measured (`Clip`): its endpointing wait, its reply, and the turns the turn
  model started early at a pause and cancelled when the speaker went on (their ASR and LLM calls run
  until the cancel); and the client's gap between one turn's end and the next turn's audio;
- optionally, the CPU a turn costs outside the stages' fitted calls (the ingress, Serve's proxy, Ray,
  the clients), measured per turn and run as one request from the user's first word, beside the
  stages on the same cores (`Scenario.overhead`).

Left out: network time beyond a fixed hop cost, the animator's session affinity (multiplexing),
memory, failures and barge-in.

The modules, each with one job (at run time each imports only those listed before it; the engine's
classes name the `Sim` that holds them in type hints only):
- `stats`: the one quantile the planner and the benchmarks share;
- `autoscaling`: Ray's policy; `engine`: the event loop, requests, deployments, replicas, costs;
  `cluster`: nodes, placement, sharing; `avatar`: the turn, early starts, sessions, the workload;
  `sim`: a scenario run as a simulation, and its report;
- `schema`: what `benchmarks/run.py --json` writes; `inputs`: files read into typed objects;
  `scenarios`: the L4 cluster and this machine as scenarios;
- `validation` and `planning`: the commands' numbers, as rows; `report`: those rows as markdown;
- `cli`: the `avatar-capacity` command (`python -m capacity`).
"""
