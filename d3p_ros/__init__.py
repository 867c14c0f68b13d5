"""d3p_ros: ROS 2 nodes of d3p (refiner, replay, evaluator) and, generated at build time,
the messages in d3p_ros.msg."""
