"""The coupons tab of the WeCom chat sidebar."""
