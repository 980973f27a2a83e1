"""The run layer: a run folder (``checkpoints/NAME``), the files in it and how they are read and written.

Training writes a run, evaluation scores it, inference loads it and the app lists it; all of them sit above this
package and meet here, so the folder layout, the weights format and the evaluation summary are defined once:

* ``core.run.folder``: ``RunDir``, the one object for "a run", naming every file in it;
* ``core.run.logs``: the JSON-lines logs (appended one whole line at a time);
* ``core.run.status``: ``status.json``, the states a run goes through;
* ``core.run.weights``: safetensors weights with the model's signature in their header;
* ``core.run.state``: the resumable training state (optimizer, counters, random generators);
* ``core.run.summary``: the typed evaluation summary that ``summary.json`` round-trips through;
* ``core.run.processes``: whether the trainer a status names is alive.
"""
