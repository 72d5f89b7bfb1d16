"""The hybrid agent, in three rooms (RLlib's RLModule / Learner / EnvRunner split):

- :mod:`~agent_service.agent.model` — what maps features to outputs: the enriched state and
  touch sequence, the networks (LSTM journey encoder, policy heads, critic, click model, bid
  Q-network), campaign statistics, the segment posterior and the conversion estimate;
- :mod:`~agent_service.agent.learning` — what trains them: one file per algorithm (DQN, PPO with
  GAE), the buffers, the reward, and the learner that owns every optimiser and publishes versions;
- :mod:`~agent_service.agent.serving` — inference only: batched decisions from one weight version,
  with logged propensities, behind the service's decision path.

Its settings are in :mod:`agent_service.config.agent`.
"""
