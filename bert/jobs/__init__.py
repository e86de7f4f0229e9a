"""One module per `config.task` (main.py runs `bert.jobs.<task>.run(config, workdir)`): the only
place that reads config sections and wires data, model and training machinery together."""
