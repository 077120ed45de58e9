import json
import logging
import logging.config

import structlog

from worker.logging import configure_logging, logging_config


def test_json_lines_for_structlog_and_stdlib(capsys):
    configure_logging("INFO", "json")
    structlog.get_logger("labelstream.test").info("batch", size=3, version="1")
    logging.getLogger("faust.test").warning("from stdlib %s", "faust")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "batch" and lines[0]["size"] == 3 and lines[0]["level"] == "info"
    assert lines[1]["event"] == "from stdlib faust" and lines[1]["logger"] == "faust.test"
    assert all("timestamp" in line for line in lines)


def test_dict_config_for_faust_uses_the_same_handler():
    config = logging_config("debug", "json")
    logging.config.dictConfig(config)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
    assert logging.getLogger().level == logging.DEBUG
