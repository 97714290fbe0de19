"""The demo: a healthy CNN beside a pathological deep sigmoid MLP, trained live on real MNIST digits.

``deepscope demo`` runs :func:`deepscope.demo.script.run_demo`. Torch is imported only here.
"""
