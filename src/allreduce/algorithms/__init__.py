"""TensorFlow builders, one module per algorithm; :mod:`allreduce.registry` lists them."""
