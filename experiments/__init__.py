"""Experiments: the ``recbandits`` command line, runners, configs, reports and plots."""
