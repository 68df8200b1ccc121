#include <stdio.h>
int main(void)
{
	fputs("skiffd: not built yet\n", stderr);
	return 1;
}
