"""Delayed conversions: eventual conversion probability and delay, learned online from the join.

:class:`DelayedConversionModel` (Chapelle-style logistic × exponential delay, censored
likelihood) answers ``p_eventual``, ``p_convert_by`` and ``expected_value_pending`` — the
R_delayed estimate for a touch still waiting; :class:`DelayedFeedbackLearner` feeds it from
the stream's touches and joined conversions.
"""

from agent_service.delay.config import DelayModelConfig
from agent_service.delay.learner import DelayedFeedbackLearner
from agent_service.delay.model import DelayedConversionModel
from agent_service.delay.synthetic import DelayedStream, delayed_feedback_stream

__all__ = [
    "DelayModelConfig",
    "DelayedConversionModel",
    "DelayedFeedbackLearner",
    "DelayedStream",
    "delayed_feedback_stream",
]
