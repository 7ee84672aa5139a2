"""How a run spreads over processes, in torchtitan's shape.

mesh.py: the Topology and the DeviceMesh of every mode (one process: none); context.py: `cp_shard` and the
vision wrapper, where a batch enters the model; apply.py: `parallelize(model, mesh, cfg)`. Nothing is
imported here, so that importing one of them does not import the others.
"""
