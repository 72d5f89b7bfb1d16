"""The agent's learning: DQN and PPO (one file each), buffers, reward, and the learner that owns them."""
