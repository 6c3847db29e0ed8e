"""TensorFlow builders, one module per algorithm; :mod:`allreduce.planning.registry` lists them."""
