"""The discovery engine: the simulated world's calibration learned from GA4-schema data.

``gaelp discover --warehouse FILE --out calibration.toml`` reads the tables ``gaelp ingest ga4``
wrote and learns, one module per thing (each docstring states its method and its check):
``segments`` (behaviour mixture, K by BIC), ``temporal`` (hour × weekday), ``delays``
(click-to-conversion delay with right-censoring and latent causing clicks), ``journeys``
(touches per person and before a conversion), ``population`` (devices per person, logins),
``channels`` (mix, CTR/CVR by channel and device); ``writer`` turns the findings into the
calibration format of ``simulators/calibration`` and a JSON report; ``run.discover`` does it all.
"""

from agent_service.discovery.run import discover
from agent_service.discovery.writer import Findings, build_calibration, report_of

__all__ = ["Findings", "build_calibration", "discover", "report_of"]
