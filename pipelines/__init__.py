"""Item pipelines, one job each, in the order ITEM_PIPELINES runs them:
validate → normalize → neardup → write."""
